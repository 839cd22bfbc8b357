"""A pretrained encoder with a task head, from a hub id, a local folder or `bundled:<name>`.

transformers reports every load with missing keys as a warning table, and a fresh task head always
has them; `load_model` silences that table and reports itself: the freshly initialised head in one
INFO line, and a WARNING naming every encoder weight that the checkpoint lacked (those are initialised
at random too, which no fine-tuning run should do silently). A model on SDPA attention is switched to
`xlgap_cpu` (models/attention.py), which is SDPA except when training in bf16 on a CPU on short
sequences, where it is faster.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from xlgap.models.attention import use_length_dispatched_attention
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


# transformers' own reports while loading: the per-weight load table (modeling_utils) and, since 5.2x, a
# tensor-parallel check that lists every layer as "not sharded" for models without a TP plan (it runs
# exactly when modeling_utils is quieted). report_missing says what matters instead.
LOADING_LOGGERS = ("transformers.modeling_utils", "transformers.distributed.tensor_parallel")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Raise transformers' loading loggers to ERROR for the duration, restoring their levels after."""
    loggers = [hf_logging.get_logger(name) for name in LOADING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def load_model(path: str, head: type, **config: Any) -> PreTrainedModel:
    """The encoder at `path` with a freshly initialised head of the Auto class `head` (e.g.
    AutoModelForTokenClassification), in float32, with length-dispatched attention where it used SDPA;
    `config` sets the head's config (num_labels, ...)."""
    with quiet_loading():
        model, info = head.from_pretrained(path, dtype=torch.float32, output_loading_info=True, **config)
    report_missing(model, sorted(info["missing_keys"]), path)
    use_length_dispatched_attention(model)
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
