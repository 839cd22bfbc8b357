"""The score blocks of results.json: from `{language: {metric: value}}` to the selection metric's scores,
the target average and gap, every metric, and the examples scored."""

from __future__ import annotations

from typing import Any

from xlgap.data.tasks import TaskSpec
from xlgap.kinds import language_scores


def scores_of_record(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """`{language: {metric: value}}` of a probe record."""
    languages = record["dev"]
    return {lang: {m: values[lang] for m, values in record["metrics"].items()} for lang in languages}


def split_results(
    evaluated: dict[str, dict[str, float]],
    task: TaskSpec,
    sources: list[str],
    targets: list[str],
    examples: dict[str, int],
) -> dict[str, Any]:
    """A results.json block for one split: the selection metric's scores and aggregates at the top
    level, every metric under `metrics`, and the number of examples scored per language."""
    present = [t for t in targets if t in evaluated]
    per_metric = {}
    for metric in task.metrics:
        scores = {lang: values[metric] for lang, values in evaluated.items()}
        per_metric[metric] = {"scores": scores, **language_scores(scores, sources, present), "target_languages": present}
    return {
        "metric": task.metric,
        **per_metric[task.metric],
        "metrics": per_metric,
        "examples": {lang: examples[lang] for lang in evaluated},
    }
