"""Figures from probe logs: gap curves (Guo et al. Figure 1), gap with loss and phase P1 (Figure 2),
and the lr multiplier of every method group.

Curves of a run are the mean over its seeds at each probe step (steps common to all seeds), with a
±std band when there are several seeds. P1 is shaded where the first seed's probes report phase P1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xlgap.results import Run  # noqa: E402


def series(run: Run, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) of a probe value over the run's seeds, at the steps every seed probed."""
    per_seed = [
        {r["step"]: r[key] for r in records if r.get(key) is not None} for records in run.records.values() if records
    ]
    if not per_seed:
        return np.array([]), np.array([]), np.array([])
    steps = sorted(set.intersection(*(set(s) for s in per_seed)))
    values = np.array([[s[step] for step in steps] for s in per_seed], dtype=float)
    return np.array(steps), values.mean(axis=0), values.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(steps))


def _phase_spans(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Step intervals in which the probes report phase P1 (from the previous probe to this one)."""
    spans, previous = [], 0
    for record in records:
        if record.get("phase") == "P1":
            if spans and spans[-1][1] == previous:
                spans[-1] = (spans[-1][0], record["step"])
            else:
                spans.append((previous, record["step"]))
        previous = record["step"]
    return spans


def _band(ax: Any, steps: np.ndarray, mean: np.ndarray, std: np.ndarray, label: str, **style: Any) -> None:
    (line,) = ax.plot(steps, mean, label=label, **style)
    if std.any():
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_gaps(runs: list[Run], path: Path) -> Path:
    """All runs' dev gap against updates on one axis; returns the written PNG path."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        steps, mean, std = series(run, "gap")
        if len(steps):
            _band(ax, steps, mean, std, run.name, marker="o", markersize=3)
    ax.set_xlabel("updates")
    ax.set_ylabel("gap: source - target avg (dev, points)")
    ax.set_title("Cross-lingual gap during training")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_gap_and_loss(runs: list[Run], path: Path) -> Path:
    """One panel per run: dev gap and training loss against updates, with phase P1 shaded."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        first = next((records for records in run.records.values() if records), [])
        for start, end in _phase_spans(first):
            ax.axvspan(start, end, color="tab:orange", alpha=0.15, lw=0)
        steps, mean, std = series(run, "gap")
        _band(ax, steps, mean, std, "gap (dev)", color="tab:blue", marker="o", markersize=3)
        ax.set_xlabel("updates")
        ax.set_ylabel("gap (points)", color="tab:blue")
        loss_ax = ax.twinx()
        steps, mean, std = series(run, "train_loss")
        _band(loss_ax, steps, mean, std, "training loss", color="tab:red")
        loss_ax.set_ylabel("training loss", color="tab:red")
        shaded = " (P1 shaded)" if _phase_spans(first) else ""
        ax.set_title(f"{run.name}{shaded}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_multipliers(runs: list[Run], path: Path) -> Path | None:
    """One panel per run with lr multipliers: each method group's K against updates (log scale)."""
    with_groups = [r for r in runs if any(rec.get("lr_multipliers") for recs in r.records.values() for rec in recs)]
    if not with_groups:
        return None
    fig, axes = plt.subplots(1, len(with_groups), figsize=(5.5 * len(with_groups), 4), squeeze=False)
    for ax, run in zip(axes[0], with_groups, strict=True):
        records = next(recs for recs in run.records.values() if recs)
        groups = sorted({g for rec in records for g in rec.get("lr_multipliers", {})})
        steps = [rec["step"] for rec in records]
        for group in groups:
            values = [rec["lr_multipliers"].get(group, 1.0) for rec in records]
            ax.step(steps, values, where="post", label=group, marker="o", markersize=3)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_xlabel("updates")
        ax.set_ylabel("lr multiplier K (first seed)")
        ax.set_title(run.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def write_figures(runs: list[Run], out_dir: Path) -> list[Path]:
    """Write every figure for `runs` into `out_dir`; returns the paths written."""
    out_dir = Path(out_dir)
    written = [plot_gaps(runs, out_dir / "gap.png"), plot_gap_and_loss(runs, out_dir / "gap_loss.png")]
    multipliers = plot_multipliers(runs, out_dir / "lr_multipliers.png")
    return written + ([multipliers] if multipliers else [])

