"""Checkpoints that cost what they must: their own interval, only the trained weights, and the best model
kept without a checkpoint per probe.

transformers' Trainer ties checkpoints to evaluation when it keeps the best model
(`load_best_model_at_end` needs `save_steps` to be a multiple of `eval_steps`), and every checkpoint
holds the whole model. With frequent probes (gap curves) and a frozen 96M-parameter embedding matrix
(the bundled encoder), that writes gigabytes for nothing. Here:

- `CheckpointClock` asks for a checkpoint every N updates, or at the first update after M minutes
  since the last one (an interruption loses at most that much training);
- a compact checkpoint (`save_training_weights`) holds the trainable parameters only; the frozen ones
  are written once per run, beside the checkpoints (`frozen.safetensors`), and read back on resume;
- `BestWeights` keeps a copy of the trainable parameters of the best probe so far in memory (a copy
  costs milliseconds; writing it at every improvement would cost a disk write per probe), and every
  checkpoint stores it, so that a resumed run restores the same best model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from xlgap.utils.errors import UserError

TRAINABLE_FILE = "trainable.safetensors"
FROZEN_FILE = "frozen.safetensors"
BEST_FILE = "best.safetensors"
TENSORS_FILE = "xlgap_tensors.safetensors"
COMBINER_TENSORS_FILE = "xlgap_combiner.safetensors"
"""The gradient combiner's tensors (LF-MLF's accumulated direction, GradVac's targets) of a multi-source run."""
_TENSOR_MARK = "__tensor__"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is incomplete, or does not fit the model being resumed."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (the tensors themselves, not copies)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything else the model's state holds: frozen parameters and buffers."""
    trained = set(trainable_state(model))
    return {name: t for name, t in model.state_dict().items() if name not in trained}


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors as safetensors through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def save_training_weights(model: nn.Module, folder: Path, frozen: Path) -> None:
    """A compact checkpoint's weights: the trainable parameters into `folder`, the frozen state into
    `frozen` once (it does not change while training)."""
    folder.mkdir(parents=True, exist_ok=True)
    _save(trainable_state(model), folder / TRAINABLE_FILE)
    if not frozen.exists():
        _save(frozen_state(model), frozen)


def load_training_weights(model: nn.Module, folder: Path, frozen: Path) -> None:
    """Restore what `save_training_weights` wrote; every tensor of the model must be covered."""
    state = {**load_file(str(frozen)), **load_file(str(folder / TRAINABLE_FILE))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: the checkpoint does not fit the model (missing {missing}, unexpected {unexpected})")


def save_state_tensors(state: Any, path: Path) -> Any:
    """`state` with every tensor replaced by a reference into a safetensors file at `path` (written when
    there is at least one): method state is JSON beside its tensors, not tensors spelled out in JSON."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = node
            return {_TENSOR_MARK: key}
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v) for v in node]
        return node

    out = walk(state)
    if tensors:
        _save(tensors, path)
    return out


def load_state_tensors(state: Any, path: Path) -> Any:
    """The inverse of `save_state_tensors`."""
    tensors = load_file(str(path)) if path.exists() else {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_TENSOR_MARK}:
                return tensors[node[_TENSOR_MARK]]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(state)


@dataclass
class BestWeights:
    """The trainable parameters of the best probe so far, its step and its selection score."""

    step: int
    score: float
    tensors: dict[str, torch.Tensor]

    @classmethod
    def capture(cls, model: nn.Module, step: int, score: float) -> BestWeights:
        """A copy (on the CPU) of the model's trainable parameters."""
        return cls(step, score, {k: v.detach().to("cpu", copy=True) for k, v in trainable_state(model).items()})

    def restore(self, model: nn.Module) -> None:
        """Copy the kept parameters back into the model."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.tensors.items():
                params[name].copy_(value)

    def save(self, folder: Path) -> dict[str, float | int]:
        """Write the tensors into a checkpoint folder; returns the metadata to store beside them."""
        _save(self.tensors, folder / BEST_FILE)
        return {"step": self.step, "score": self.score}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, float | int]) -> BestWeights:
        """Read what `save` wrote."""
        return cls(int(meta["step"]), float(meta["score"]), load_file(str(folder / BEST_FILE)))


class CheckpointClock(TrainerCallback):
    """Asks for a checkpoint every `every` updates, or, without it, at the first update `minutes` after
    the last checkpoint (or the start)."""

    def __init__(self, every: int | None = None, minutes: float | None = None):
        if every is None and minutes is None:
            raise ValueError("CheckpointClock needs `every` (updates) or `minutes`")
        self.every, self.minutes = every, minutes
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.every is not None:
            due = state.global_step % self.every == 0
        else:
            due = time.monotonic() - self.last >= 60 * self.minutes
        if due:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()
