"""Periodic measurements during training, one JSON line per probe in `metrics.jsonl`.

Each record holds the step, the mean training loss since the previous probe, the dev score of every
language in the task's selection metric (`dev`), every metric of every language (`metrics`:
`{metric: {language: value}}`), the source/target/average scores and the gap, the score the
selection rule uses, every method group's lr multiplier, and the methods' own values (FSF's phase
and phi).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from statistics import fmean
from typing import Any

from xlgap.kinds.evaluate import language_scores
from xlgap.methods.base import Method, TrainingStats
from xlgap.results import read_records


class ProbeLog:
    """Builds probe records from evaluation metrics and appends them to a JSONL file."""

    def __init__(
        self,
        path: Path,
        metric: str,
        sources: list[str],
        targets: list[str],
        selection: str,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.path = Path(path)
        self.metric = metric
        self.sources = list(sources)
        self.targets = list(targets)
        self.selection = selection
        self.on_record = on_record
        self.last_step = max((r["step"] for r in read_records(self.path)), default=0)

    def selection_score(self, scores: dict[str, float | None]) -> float:
        """The number model selection maximises: source dev mean, or mean dev over all languages."""
        return scores["source"] if self.selection == "source_dev" else scores["avg"]

    def build(
        self,
        step: int,
        epoch: float | None,
        evaluated: dict[str, dict[str, float]],
        stats: TrainingStats,
        method: Method,
    ) -> dict[str, Any]:
        """The record of the probe at `step`, from the scores `{language: {metric: value}}` of the dev sets."""
        languages = [*self.sources, *self.targets]
        dev = {lang: evaluated[lang][self.metric] for lang in languages}
        metrics = {m: {lang: evaluated[lang][m] for lang in languages} for m in evaluated[languages[0]]}
        scores = language_scores(dev, self.sources, self.targets)
        window = stats.losses[self.last_step : step]
        penalties = stats.penalties[self.last_step : step]
        return {
            "step": step,
            "epoch": epoch,
            "train_loss": fmean(window) if window else None,
            "dev": dev,
            "metrics": metrics,
            **scores,
            "select": self.selection_score(scores),
            "lr_multipliers": method.lr_multipliers(step, stats),
            "penalties": {name: fmean(p[name] for p in penalties) for name in penalties[-1]} if penalties else {},
            **method.probe_values(step, stats),
        }

    def append(self, record: dict[str, Any]) -> None:
        """Append a record to the log (flushed to disk) and show it."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.last_step = record["step"]
        if self.on_record is not None:
            self.on_record(record)

    def truncate(self, step: int) -> None:
        """Drop the records after `step` (a resumed run repeats them), rewriting the file atomically."""
        kept = [r for r in read_records(self.path) if r["step"] <= step]
        self.last_step = max((r["step"] for r in kept), default=0)
        if not kept:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
