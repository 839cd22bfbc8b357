"""A pretrained encoder with a task head, from a hub id, a local folder or `bundled:<name>`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from xlgap.models.bundled import resolve_model_path
from xlgap.utils.errors import UserError


def resolve_model(spec: str, cache_dir: str | None = None) -> str:
    """The path or hub id to load `spec` from (bundled models are converted on first use)."""
    return resolve_model_path(spec, Path(cache_dir) if cache_dir else None)


class ModelNotFoundError(UserError, ValueError):
    """`model.name` is neither a model folder nor a model reachable on the hub, or lacks a fast tokenizer."""


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The fast tokenizer saved with the model (a fast one is required for word alignment and offsets)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        where = "a folder without a tokenizer" if Path(path).is_dir() else "not a model folder, and not a model reachable on the hub"
        raise ModelNotFoundError(f"model.name: {path} is {where} ({str(err).splitlines()[0]})") from None
    if not tokenizer.is_fast:
        raise ModelNotFoundError(f"model.name: {path}: xlgap needs a fast (Rust) tokenizer for word alignment; got {type(tokenizer).__name__}")
    return tokenizer


def load_model(path: str, head: type, **config: Any) -> PreTrainedModel:
    """The encoder at `path` with a freshly initialised head of the Auto class `head` (e.g.
    AutoModelForTokenClassification), in float32; `config` sets the head's config (num_labels, ...)."""
    return head.from_pretrained(path, dtype=torch.float32, **config)
