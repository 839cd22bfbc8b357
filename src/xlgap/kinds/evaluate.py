"""Evaluation without a Trainer: score a model on per-language evaluation sets of any task kind.

One forward pass over the evaluation tokens, in inference mode, in length-sorted batches: each split's
rows are packed once into flat NumPy arrays (cached on the split), a batch is cut out and padded by
array indexing (no per-row Python), the kind's `gather` reduces the outputs on the device (argmax,
top-k), and `decode` + `score` turn everything gathered into predictions and metrics. Runs, probes,
sweeps and weight interpolation all call `evaluate_sets`. Written here rather than through
`Trainer.evaluate` because the Trainer gathers full logits per example and hands `compute_metrics`
only aligned arrays, while a kind's metric needs the whole split (windows to stitch, QA features to map
back to questions).

Scores are percentages. The gap is the mean source score minus the mean target score:
P_source - P_(S/source) of Guo et al.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import numpy as np
import torch
from torch import nn

from xlgap.kinds.base import EncodedSplit, EvalBatch, kind_of

PAD_ALIGNMENT = -1


@dataclass
class Packed:
    """A split's rows as flat arrays: `flat[column][starts[r] : starts[r] + lengths[r]]` is row r;
    `order` lists the rows longest first."""

    order: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    flat: dict[str, np.ndarray]
    example_index: np.ndarray


def pack(split: EncodedSplit) -> Packed:
    """The packed rows of `split` (computed once, then cached on it)."""
    if "packed" not in split.cache:
        lengths = np.asarray(split.columns["length"], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        ragged = [c for c in (*split.inputs, *kind_of(split.task).alignment) if c != "attention_mask"]
        flat = {c: np.fromiter((v for row in split.columns[c] for v in row), dtype=np.int64, count=int(lengths.sum())) for c in ragged}
        order = np.argsort(-lengths, kind="stable")
        example_index = np.asarray(split.columns["example_index"], dtype=np.int64)
        split.cache["packed"] = Packed(order, lengths, starts, flat, example_index)
    return split.cache["packed"]


def batch_of(split: EncodedSplit, rows: np.ndarray) -> EvalBatch:
    """The rows `rows` of `split`, right-padded into one batch (model inputs as CPU tensors)."""
    packed = pack(split)
    alignment = kind_of(split.task).alignment
    lengths = packed.lengths[rows]
    width = int(lengths.max())
    real = np.arange(width)[None, :] < lengths[:, None]
    index = np.where(real, packed.starts[rows][:, None] + np.arange(width)[None, :], 0)
    inputs = {"attention_mask": torch.from_numpy(real.astype(np.int64))}
    columns = {"example_index": packed.example_index[rows]}
    for name, values in packed.flat.items():
        if name in alignment:
            columns[name] = np.where(real, values[index], PAD_ALIGNMENT)
        else:
            pad = split.pad_id if name == "input_ids" else 0
            inputs[name] = torch.from_numpy(np.where(real, values[index], pad))
    return EvalBatch(rows, inputs, columns)


def batches(split: EncodedSplit, batch_size: int) -> Iterator[EvalBatch]:
    """Length-sorted, right-padded batches (model inputs as CPU tensors) of at most `batch_size` rows and
    at most as many padded tokens as `batch_size` rows of the split's mean length (at least one row).

    The token budget matters for small sets: the 60 dev sentences of a probe fit in one batch of 64
    rows, which would pad every sentence to the longest one (about three times the real tokens for UD
    POS); under the budget the long rows go in smaller batches of their own."""
    packed = pack(split)
    order = packed.order
    budget = batch_size * float(packed.lengths.mean()) if len(order) else 0.0
    first = 0
    while first < len(order):
        width = int(packed.lengths[order[first]])  # the longest row of the batch: rows run longest first
        rows = min(batch_size, max(1, int(budget // width)))
        yield batch_of(split, order[first : first + rows])
        first += rows


def fixed_batch(split: EncodedSplit, size: int = 32) -> dict[str, torch.Tensor]:
    """A batch of `size` rows spread evenly over the split's lengths (a probe batch that is the same
    every time it is used), as model inputs."""
    order = pack(split).order
    picks = np.unique(np.linspace(0, len(order) - 1, min(size, len(order))).round().astype(int))
    return batch_of(split, order[picks]).inputs


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Any:
    """`torch.autocast` on `device` in `dtype`, or no autocast for None (full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def predict(model: nn.Module, split: EncodedSplit, batch_size: int = 64, dtype: torch.dtype | None = None) -> list[Any]:
    """One prediction per example of `split` (the model's mode is restored afterwards)."""
    kind = kind_of(split.task)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gathered: list[dict[str, np.ndarray]] = []
    try:
        with torch.inference_mode(), autocast_context(device, dtype):
            for batch in batches(split, batch_size):
                batch.inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
                gathered.append(kind.gather(split, model(**batch.inputs), batch))
    finally:
        model.train(was_training)
    merged = {key: np.concatenate([g[key] for g in gathered]) for key in gathered[0]}
    return kind.decode(split, merged)


@dataclass
class Evaluation:
    """Scores (`{language: {metric: value}}`) and predictions (`{language: one per example}`)."""

    scores: dict[str, dict[str, float]]
    predictions: dict[str, list[Any]]


def evaluate_sets(
    model: nn.Module,
    sets: Mapping[str, EncodedSplit],
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
    on_language: Callable[[str, EncodedSplit], None] | None = None,
) -> Evaluation:
    """Score `model` on every language's evaluation set with its task kind's metrics."""
    scores: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[Any]] = {}
    for language, split in sets.items():
        if on_language is not None:
            on_language(language, split)
        predictions[language] = predict(model, split, batch_size, dtype)
        scores[language] = kind_of(split.task).score(split, predictions[language])
    return Evaluation(scores, predictions)


def language_scores(
    scores: dict[str, float], sources: list[str], targets: list[str]
) -> dict[str, float | None]:
    """Source mean, target mean, mean over all languages, and the gap (source - target mean);
    None for a part with no language."""
    present = [lang for lang in sources if lang in scores]
    source = fmean(scores[lang] for lang in present) if present else None
    target = fmean(scores[lang] for lang in targets) if targets else None
    every = [*present, *targets]
    return {
        "source": source,
        "target_avg": target,
        "avg": fmean(scores[lang] for lang in every) if every else None,
        "gap": source - target if source is not None and target is not None else None,
    }
