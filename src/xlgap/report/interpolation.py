"""Figures of the interpolation analysis: the 1D lines with their 95% CI bands (Wu et al. 2022 Figure 2),
the 2D contours of source and target score (Figure 3), the deltas' norm ratio and angle (Appendix B),
and the score and gap along the path back to the pretrained weights.

Each takes the summary dict written by `xlgap.interpolation` and returns the path of the PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xlgap.report.plots import plt, save_figure


def plot_lines(summary: dict[str, Any], path: Path) -> Path:
    """Two panels (monolingual source model -> bilingual, monolingual target model -> bilingual), each
    with the source and target language's normalised dev score against alpha and its 95% CI band."""
    source, target = summary["source"], summary["target"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    titles = {"src": f"θ_src ({source} only) → θ_bi", "tgt": f"θ_tgt ({target} only) → θ_bi"}
    for ax, mono in zip(axes, ("src", "tgt"), strict=True):
        for lang, color in ((source, "tab:red"), (target, "tab:blue")):
            points = summary["lines"][mono][lang]
            alphas = np.array([p["alpha"] for p in points])
            (line,) = ax.plot(alphas, [p["mean"] for p in points], color=color, label=f"{lang} dev", marker=".", markersize=3)
            if all(p["ci_low"] is not None for p in points):
                ax.fill_between(alphas, [p["ci_low"] for p in points], [p["ci_high"] for p in points], color=line.get_color(), alpha=0.2, lw=0)
        for x in (0.0, 1.0):
            ax.axvline(x, color="grey", lw=0.6, ls=":")
        ax.set_title(titles[mono])
        ax.set_xlabel("alpha (0: monolingual, 1: bilingual)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{summary['metric']} / bilingual model's")
    fig.suptitle(f"{source} → {target}, seeds {summary['seeds']} (band: 95% CI)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_plane(summary: dict[str, Any], path: Path) -> Path:
    """Contours of the normalised source and target dev score over (a1, a2): theta_bi + a1 delta_src +
    a2 delta_tgt, with the three models marked."""
    plane, source, target = summary["plane"], summary["source"], summary["target"]
    axis = np.array(plane["axis"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, lang in zip(axes, (source, target), strict=True):
        values = np.array(plane[lang]).T  # rows: a2, columns: a1
        filled = ax.contourf(axis, axis, values, levels=12, cmap="viridis")
        ax.contour(axis, axis, values, levels=12, colors="k", linewidths=0.3)
        fig.colorbar(filled, ax=ax)
        for (x, y), label in (((0, 0), "bi"), ((1, 0), "src"), ((0, 1), "tgt")):
            ax.plot(x, y, "w^", markersize=7, markeredgecolor="k")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), color="w", fontsize=9)
        ax.set_xlabel("a1 (along δ_src)")
        ax.set_ylabel("a2 (along δ_tgt)")
        ax.set_title(f"{lang} dev {summary['metric']} / bilingual model's")
    fig.suptitle(f"{source} → {target}, mean over seeds {summary['seeds']}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_geometry(summary: dict[str, Any], path: Path) -> Path:
    """The norm ratio ||delta_src|| / ||delta_tgt|| against the angle between them, one point per seed."""
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    geometry = summary["geometry"]
    ratios = [g["norm_ratio"] for g in geometry.values()]
    angles = [g["angle_degrees"] for g in geometry.values()]
    ax.scatter(angles, ratios, color="tab:purple")
    for seed, x, y in zip(geometry, angles, ratios, strict=True):
        ax.annotate(f"seed {seed}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("angle between δ_src and δ_tgt (degrees)")
    ax.set_ylabel("‖δ_src‖ / ‖δ_tgt‖")
    ax.set_title(f"{summary['source']} → {summary['target']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gap_along_alpha(summary: dict[str, Any], path: Path) -> Path:
    """Source score, target average and gap (mean over seeds) against alpha, from the pretrained weights
    (0) to the fine-tuned model (1), for each evaluated split; the dev-chosen alphas marked."""
    splits = list(summary["along_alpha"])
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    chosen = sorted(set(summary["chosen_alpha"].values()))
    for ax, split in zip(axes[0], splits, strict=True):
        rows = summary["along_alpha"][split]
        alphas = [r["alpha"] for r in rows]
        for key, label, color in (("source", "source", "tab:red"), ("target_avg", "target avg", "tab:blue"), ("gap", "gap", "tab:green")):
            if all(r[key] is not None for r in rows):
                ax.plot(alphas, [r[key] for r in rows], marker="o", markersize=3, label=label, color=color)
        for alpha in chosen:
            ax.axvline(alpha, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("alpha (0: pretrained encoder, 1: fine-tuned)")
        ax.set_ylabel(f"{summary['metric']} (points)")
        ax.set_title(f"{split}; dashed: alpha chosen on dev")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
