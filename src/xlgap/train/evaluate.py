"""Per-language metrics and the scores derived from them (source, target average, gap).

Scores are percentages, as the papers report them. The gap is the mean source score minus the mean
target score: P_source - P_(S/source) of Guo et al.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean

import numpy as np
import torch
from transformers import EvalPrediction

IGNORE_INDEX = -100


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy in percent over the positions whose label is not -100 (padding, later subwords)."""
    mask = labels != IGNORE_INDEX
    if not mask.any():
        raise ValueError("no labelled positions to score")
    return float((predictions[mask] == labels[mask]).mean() * 100)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"accuracy": accuracy}


def metric_fn(metric: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """A Trainer `compute_metrics` for `metric`, returning `{metric: value}`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    score = METRICS[metric]

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        return {metric: score(np.asarray(prediction.predictions), np.asarray(prediction.label_ids))}

    return compute


def argmax_logits(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the predicted class ids, so evaluation gathers ids instead of full logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def language_scores(
    scores: dict[str, float], sources: list[str], targets: list[str]
) -> dict[str, float | None]:
    """Source mean, target mean, mean over all languages, and the gap (source - target mean)."""
    source = fmean(scores[lang] for lang in sources)
    target = fmean(scores[lang] for lang in targets) if targets else None
    return {
        "source": source,
        "target_avg": target,
        "avg": fmean(scores[lang] for lang in [*sources, *targets]),
        "gap": source - target if target is not None else None,
    }
