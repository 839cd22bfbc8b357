"""A pretrained encoder with a task head, from a hub id, a local folder or `bundled:<name>`.

transformers reports every load with missing keys as a warning table, and a fresh task head always
has them; `load_model` silences that table and reports itself: the freshly initialised head in one
INFO line, and a WARNING naming every encoder weight that the checkpoint lacked (those are initialised
at random too, which no fine-tuning run should do silently).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from xlgap.models.bundled import resolve_model_path
from xlgap.utils.errors import UserError

log = logging.getLogger(__name__)


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
    loader = hf_logging.get_logger("transformers.modeling_utils")
    level = loader.level
    loader.setLevel(logging.ERROR)
    try:
        model, info = head.from_pretrained(path, dtype=torch.float32, output_loading_info=True, **config)
    finally:
        loader.setLevel(level)
    report_missing(model, sorted(info["missing_keys"]), path)
    return model


def report_missing(model: PreTrainedModel, missing: list[str], path: str) -> list[str]:
    """Log the weights of `model` that the checkpoint at `path` did not hold: the task head's at INFO,
    the encoder's (under `model.base_model_prefix`) as a WARNING; returns the encoder's."""
    prefix = model.base_model_prefix + "."
    encoder = [key for key in missing if key.startswith(prefix)]
    fresh_head = [key for key in missing if not key.startswith(prefix)]
    if fresh_head:
        log.info("%s: freshly initialised task head (%s)", path, ", ".join(fresh_head))
    if encoder:
        shown = ", ".join(encoder[:8]) + (f" and {len(encoder) - 8} more" if len(encoder) > 8 else "")
        log.warning("%s: %d encoder weight(s) are not in the checkpoint and were initialised at random: %s", path, len(encoder), shown)
    return encoder
