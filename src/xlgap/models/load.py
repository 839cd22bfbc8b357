"""A pretrained encoder with the head of a task, from a hub id, a local folder or `bundled:<name>`."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from xlgap.data.encode import label_maps
from xlgap.data.tasks import TaskSpec
from xlgap.models.bundled import resolve_model_path

HEADS = {
    "token_classification": AutoModelForTokenClassification,
    "sequence_classification": AutoModelForSequenceClassification,
}


def resolve_model(spec: str, cache_dir: str | None = None) -> str:
    """The path or hub id to load `spec` from (bundled models are converted on first use)."""
    return resolve_model_path(spec, Path(cache_dir) if cache_dir else None)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The fast tokenizer saved with the model (a fast one is required for word-level labels)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: xlgap needs a fast (Rust) tokenizer for word alignment; got {type(tokenizer).__name__}")
    return tokenizer


def load_model(path: str, task: TaskSpec) -> PreTrainedModel:
    """The encoder at `path` with a freshly initialised head for `task`, in float32."""
    if task.kind not in HEADS:
        raise ValueError(f"task {task.name}: no model head for kind {task.kind!r}")
    label2id, id2label = label_maps(task)
    return HEADS[task.kind].from_pretrained(
        path, num_labels=len(label2id), label2id=label2id, id2label=id2label, dtype=torch.float32
    )
