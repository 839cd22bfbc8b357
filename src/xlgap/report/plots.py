"""Figures from probe logs: gap curves (Guo et al. Figure 1), gap with loss and phase P1 (Figure 2),
the lr multiplier of every method group, and each layer's CKA to the pretrained model where it was
measured (Figure 6).

Curves of a run are the mean over its seeds at each probe step (steps common to all seeds), with a
±std band when there are several seeds. Where a run's methods have training phases (FSF), phase P1 is
shaded update by update, recomputed by the run's own methods from the first seed's statistics
(`losses.json`, `cka.json`, the warm-up length in `results.json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xlgap.methods import TrainingStats, build_methods  # noqa: E402
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


def phase_one_spans(phases: list[bool]) -> list[tuple[int, int]]:
    """Update intervals (first, last), counting from 1, where `phases` (one flag per update) is P1."""
    spans: list[tuple[int, int]] = []
    for t, in_p1 in enumerate(phases, 1):
        if not in_p1:
            continue
        if spans and spans[-1][1] == t - 1:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return spans


def seed_stats(run: Run, seed: int) -> TrainingStats:
    """The training statistics of one seed as its methods saw them (losses, CKA, warm-up length)."""
    result = next((r for r in run.results if r.get("seed") == seed), {})
    schedule = result.get("schedule") or {}
    return TrainingStats(
        losses=run.losses.get(seed, []),
        cka=run.cka.get(seed, []),
        warmup_steps=schedule.get("warmup_steps") or 0,
        total_steps=schedule.get("total_steps"),
    )


def run_phases(run: Run, seed: int) -> list[bool] | None:
    """Whether each update of a seed was in phase P1, recomputed by the run's own methods from its
    statistics (a method with phases reports `"phase"` in its probe values); None without phases."""
    stats = seed_stats(run, seed)
    methods = build_methods(run.config.get("methods") or [])
    phases = [methods.probe_values(t, stats).get("phase") for t in range(len(stats.losses))]
    if not any(phases):
        return None
    return [phase == "P1" for phase in phases]


def _band(ax: Any, steps: np.ndarray, mean: np.ndarray, std: np.ndarray, label: str, **style: Any) -> None:
    (line,) = ax.plot(steps, mean, label=label, **style)
    if std.any():
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)


def save_figure(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` as PNG (atomically: a temporary file renamed into place), close it; returns `path`."""
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
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return save_figure(fig, path)


def plot_gap_and_loss(runs: list[Run], path: Path) -> Path:
    """One panel per run: dev gap and training loss against updates, with phase P1 shaded."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        seed = next(iter(run.losses), None)
        first_losses = run.losses.get(seed, [])
        phases = run_phases(run, seed) if seed is not None else None
        spans = phase_one_spans(phases) if phases else []
        for start, end in spans:
            ax.axvspan(start - 1, end, color="tab:orange", alpha=0.15, lw=0)
        steps, mean, std = series(run, "gap")
        _band(ax, steps, mean, std, "gap (dev)", color="tab:blue", marker="o", markersize=3)
        ax.set_xlabel("updates")
        ax.set_ylabel("gap (points)", color="tab:blue")
        loss_ax = ax.twinx()
        if first_losses:
            loss_ax.plot(range(1, len(first_losses) + 1), first_losses, color="tab:red", alpha=0.6, lw=0.8)
        else:
            steps, mean, std = series(run, "train_loss")
            _band(loss_ax, steps, mean, std, "training loss", color="tab:red")
        loss_ax.set_ylabel("training loss (first seed)", color="tab:red")
        shaded = f"\nP1 shaded ({sum(e - b + 1 for b, e in spans)} of {len(first_losses)} updates)" if spans else ""
        ax.set_title(f"{run.name}{shaded}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def multiplier_curves(run: Run) -> tuple[list[int], dict[str, list[float]]]:
    """(updates, {group: K of each update}) for the first seed.

    Recomputed update by update from `losses.json` (and `cka.json`) with the run's own methods (their
    multipliers are a function of those statistics); from the probe records when the losses are not there.
    """
    seed = next(iter(run.losses), None)
    losses = run.losses.get(seed)
    if losses:
        stats = seed_stats(run, seed)
        methods = build_methods(run.config.get("methods") or [])
        per_update = [methods.lr_multipliers(t, stats) for t in range(len(losses))]
        updates = list(range(1, len(losses) + 1))
    else:
        records = next((recs for recs in run.records.values() if recs), [])
        per_update = [r.get("lr_multipliers", {}) for r in records]
        updates = [r["step"] for r in records]
    groups = sorted({g for m in per_update for g in m})
    return updates, {g: [m.get(g, 1.0) for m in per_update] for g in groups}


def _run_panels(panels: list[tuple[Run, Any]], path: Path, ylabel: str, draw: Any) -> Path | None:
    """One panel per (run, data) pair, drawn by `draw(ax, data)` against updates; None when there are none."""
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (run, data) in zip(axes[0], panels, strict=True):
        draw(ax, data)
        ax.set_xlabel("updates")
        ax.set_ylabel(ylabel)
        ax.set_title(run.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(ax.get_lines()) > 6 else 1)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_multipliers(runs: list[Run], path: Path) -> Path | None:
    """One panel per run with lr multipliers: each method group's K against updates (symlog scale)."""

    def draw(ax: Any, curves: tuple[list[int], dict[str, list[float]]]) -> None:
        updates, groups = curves
        for group, values in groups.items():
            ax.step(updates, values, where="post", label=group)
        ax.set_yscale("symlog", linthresh=0.01)

    panels = [(run, curves) for run in runs if (curves := multiplier_curves(run))[1]]
    return _run_panels(panels, path, "lr multiplier K (first seed)", draw)


def plot_cka(runs: list[Run], path: Path) -> Path | None:
    """One panel per run that measured CKA: each layer's CKA to the pretrained model against updates
    (first seed); None when no run did."""

    def draw(ax: Any, cka: list[dict[str, Any]]) -> None:
        steps = [m["step"] for m in cka]
        layers = np.array([m["layers"] for m in cka])
        colours = plt.cm.viridis(np.linspace(0, 1, layers.shape[1]))
        for layer in range(layers.shape[1]):
            ax.plot(steps, layers[:, layer], marker=".", color=colours[layer], label=f"layer {layer}")

    panels = [(run, next(iter(run.cka.values()))) for run in runs if run.cka]
    return _run_panels(panels, path, "linear CKA to the pretrained model (first seed)", draw)


def plot_layer_sweep(
    families: dict[str, dict[int, dict[str, Any]]], reference: float | None, path: Path, label: str
) -> Path:
    """Guo et al. Figure 3: the target average of every layer's run, one line per family (mean ± std
    over seeds), and the reference run (plain fine-tuning) as a horizontal line."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for family, layers in families.items():
        xs = sorted(layers)
        cells = [layers[x]["target_avg"] for x in xs]
        mean = np.array([c["mean"] for c in cells])
        std = np.array([c["std"] or 0.0 for c in cells])
        _band(ax, np.array(xs) + 1, mean, std, family, marker="o", markersize=3)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", lw=1, label="reference (DF)")
    ax.set_xlabel("layer")
    ax.set_ylabel(label)
    ax.set_title("Score per layer (layer sweep)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_frechet(distances: dict[str, float], scores: dict[str, float], path: Path, label: str) -> Path:
    """The paper's Table 5 as a scatter: each language's Fréchet distance to the source against its score."""
    languages = sorted(set(distances) & set(scores))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([distances[lang] for lang in languages], [scores[lang] for lang in languages])
    for lang in languages:
        ax.annotate(lang, (distances[lang], scores[lang]), textcoords="offset points", xytext=(3, 3), fontsize=8)
    ax.set_xlabel("Fréchet distance of the Fisher to the source's")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def moving_average(values: list[float], window: int) -> np.ndarray:
    """The running mean over `window` updates (shorter at the start)."""
    x = np.asarray(values, dtype=float)
    cumulative = np.cumsum(np.insert(x, 0, 0.0))
    counts = np.minimum(np.arange(1, len(x) + 1), window)
    return (cumulative[1:] - cumulative[np.maximum(np.arange(1, len(x) + 1) - window, 0)]) / counts


def plot_sources(runs: list[Run], path: Path, window: int = 10) -> Path | None:
    """Multi-source runs, first seed: each source's training loss and combiner weight against updates
    (running means over `window` updates); None when no run is multi-source."""
    multi = [run for run in runs if run.sources]
    if not multi:
        return None
    fig, axes = plt.subplots(2, len(multi), figsize=(5 * len(multi), 6), squeeze=False, sharex="col")
    for column, run in enumerate(multi):
        seed = min(run.sources)
        record = run.sources[seed]
        for t, lang in enumerate(record["languages"]):
            axes[0][column].plot(moving_average([x[t] for x in record["losses"]], window), label=lang)
            axes[1][column].plot(moving_average([w[t] for w in record["weights"]], window), label=lang)
        axes[0][column].set_title(f"{run.name} (seed {seed})")
        axes[0][column].set_ylabel("training loss")
        axes[1][column].set_ylabel("combiner weight")
        axes[1][column].set_xlabel("updates")
        for ax in axes[:, column]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"Per-source loss and weight (running mean over {window} updates)", fontsize=10)
    return save_figure(fig, path)


def write_figures(runs: list[Run], out_dir: Path) -> list[Path]:
    """Write every figure for `runs` into `out_dir`; returns the paths written."""
    out_dir = Path(out_dir)
    written = [plot_gaps(runs, out_dir / "gap.png"), plot_gap_and_loss(runs, out_dir / "gap_loss.png")]
    optional = [
        plot_multipliers(runs, out_dir / "lr_multipliers.png"),
        plot_cka(runs, out_dir / "cka.png"),
        plot_sources(runs, out_dir / "sources.png"),
    ]
    return written + [path for path in optional if path]

