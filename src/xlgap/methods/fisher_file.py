"""The file of a diagonal Fisher (written by `xlgap fisher`, read by the `ewc` method): safetensors by
parameter name, with the provenance as JSON in the metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xlgap.utils.errors import UserError


class FisherError(UserError, ValueError):
    """A Fisher file that is missing, not a Fisher, or does not fit the model."""


@dataclass
class Fisher:
    """A diagonal Fisher by parameter name, and where it came from."""

    tensors: dict[str, torch.Tensor]
    provenance: dict[str, Any]

    def save(self, path: Path) -> None:
        """Write safetensors with the provenance (JSON) in the metadata, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous().cpu() for k, v in self.tensors.items()}, str(tmp), metadata={"xlgap_fisher": json.dumps(self.provenance)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Fisher:
        """Read a Fisher written by `save` (`xlgap fisher`)."""
        path = Path(path)
        if not path.is_file():
            raise FisherError(f"{path}: no such Fisher file (write one with `xlgap fisher`)")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as err:  # safetensors raises its own error types for a file that is not one
            raise FisherError(f"{path}: not a safetensors file ({err})") from None
        if "xlgap_fisher" not in meta:
            raise FisherError(f"{path}: a safetensors file, but not a Fisher written by `xlgap fisher` (no provenance)")
        return cls(tensors, json.loads(meta["xlgap_fisher"]))

    def normalized(self) -> dict[str, torch.Tensor]:
        """The Fisher divided by its total, so that it sums to one."""
        total = sum(float(t.double().sum()) for t in self.tensors.values())
        return {k: v.double() / total for k, v in self.tensors.items()}


