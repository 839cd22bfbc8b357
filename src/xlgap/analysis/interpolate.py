"""Weight-space interpolation: models on lines and planes between fine-tuned models, scored per language.

The analysis of Wu, Van Durme and Dredze, "Zero-shot Cross-lingual Transfer is Under-specified
Optimization" (RepL4NLP 2022), Section 3.1: three models fine-tuned from the same initialisation,
source-only theta_src, target-only theta_tgt and bilingual theta_bi, and

- Eq. 1-2 (1D): theta(alpha) = alpha theta_bi + (1 - alpha) theta_mono, mono = src or tgt;
- Eq. 3 (2D):   theta(a1, a2) = theta_bi + a1 delta_src + a2 delta_tgt, delta_x = theta_x - theta_bi;

alpha, a1, a2 over -0.5 ... 1.5 in steps of 0.1, plus the paper's extra alphas near 0 and 1 (its
footnote 5); every point scored on the source and target dev sets; scores normalised by the bilingual
model; mean, variance and a 95% confidence interval over seeds; the norm ratio ||delta_src|| /
||delta_tgt|| and the angle between the deltas (its Appendix B). The same machinery interpolates a
fine-tuned model back towards its pretrained weights, theta(alpha) = (1 - alpha) theta_pre + alpha
theta_ft on the encoder with the task head kept (weight-space ensembling, WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022).

Every point is an affine combination sum_k w_k theta_k of anchor models (weights summing to 1: the
2D point is (1 - a1 - a2) theta_bi + a1 theta_src + a2 theta_tgt), written in place into one model
whose other parameters are left as they are; only the parameters where the anchors differ are held (a
frozen weight stays bit-identical), once, in float32. At an anchor (a weight of 1, the others 0) the
point is that anchor bit for bit. Settled here: normalisation divides each seed's score by the same
seed's bilingual score on the same language and metric (the paper normalises "mean and variance ...
by the bilingual model performance"; per seed, so that the bilingual point is exactly 1 with no
variance); the 95% interval is Student's t over seeds. Written by hand because no library interpolates
Hugging Face models in place and scores them per language; the scoring is `xlgap.kinds.evaluate_sets`
(one inference pass over the evaluation tokens per point).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, variance
from typing import Any

import torch
from scipy.stats import t as student_t
from torch import nn

from xlgap.kinds import EncodedSplit, evaluate_sets
from xlgap.models.anatomy import model_anatomy
from xlgap.utils.errors import UserError
from xlgap.utils.files import read_json, write_json_atomic

PAPER_EXTRA_ALPHAS = (0.025, 0.05, 0.075, 0.125, 0.15, 0.175, 0.825, 0.85, 0.875, 0.925, 0.95, 0.975)


class InterpolationError(UserError, ValueError):
    """Anchor models that cannot be combined, or a grid that does not parse."""


def paper_grid(start: float = -0.5, stop: float = 1.5, step: float = 0.1, extra: Sequence[float] = PAPER_EXTRA_ALPHAS) -> list[float]:
    """The coefficients start, start + step, ..., stop plus `extra`, sorted, rounded to 4 decimals."""
    if step <= 0 or stop < start:
        raise InterpolationError(f"interpolation grid: expected start <= stop and step > 0, got {start}..{stop} step {step}")
    count = int(round((stop - start) / step))
    values = {round(start + i * step, 4) for i in range(count + 1)} | {round(float(v), 4) for v in extra}
    return sorted(values)


def parse_grid(text: str, extra: Sequence[float] = PAPER_EXTRA_ALPHAS) -> list[float]:
    """`START:STOP:STEP` (e.g. `-0.5:1.5:0.1`, plus `extra`: by default the paper's extra alphas) or a
    list `0,0.5,1` (exactly those)."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            return paper_grid(start, stop, step, extra)
        return sorted({round(float(v), 4) for v in text.split(",")})
    except ValueError:
        raise InterpolationError(f"--alphas {text!r}: expected START:STOP:STEP (e.g. -0.5:1.5:0.1) or a list such as 0,0.5,1") from None


def parameter_state(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """A float32 CPU copy of the named parameters of `model` (all of them for None)."""
    chosen = None if names is None else set(names)
    return {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in model.named_parameters() if chosen is None or n in chosen}


class AffinePoints:
    """Points sum_k w_k anchor_k (weights summing to 1), written in place into `model`'s parameters.

    `anchors` are state dicts of models with the architecture of `model`; `select` (an anatomy selector,
    default every parameter) limits what moves. Parameters equal in every anchor are not held.
    """

    def __init__(self, model: nn.Module, anchors: Sequence[Mapping[str, torch.Tensor]], select: str = "all"):
        if len(anchors) < 2:
            raise InterpolationError("interpolation needs at least two anchor models")
        params = dict(model.named_parameters())
        names = model_anatomy(model).select(select)
        for index, anchor in enumerate(anchors):
            missing = [n for n in names if n not in anchor]
            if missing:
                raise InterpolationError(f"anchor model {index} has no parameter {missing[0]!r}: the models differ in architecture")
            wrong = [n for n in names if anchor[n].shape != params[n].shape]
            if wrong:
                raise InterpolationError(
                    f"anchor model {index}: {wrong[0]} has shape {tuple(anchor[wrong[0]].shape)}, the model "
                    f"{tuple(params[wrong[0]].shape)} (a different head or vocabulary?)"
                )
        self.model = model
        self.names = [n for n in names if any(not torch.equal(anchors[0][n], a[n]) for a in anchors[1:])]
        device = next(model.parameters()).device
        self.anchors = [{n: a[n].to(device, torch.float32) for n in self.names} for a in anchors]
        self._params = {n: params[n] for n in self.names}

    @torch.no_grad()
    def move_to(self, weights: Sequence[float]) -> None:
        """Set the moving parameters to sum_k weights[k] * anchor_k."""
        if len(weights) != len(self.anchors):
            raise ValueError(f"expected {len(self.anchors)} weights, got {len(weights)}")
        if not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
            raise ValueError(f"the weights of an affine combination sum to 1, got {sum(weights)}")
        for name, param in self._params.items():
            value = self.anchors[0][name] * weights[0]
            for weight, anchor in zip(weights[1:], self.anchors[1:], strict=True):
                value.add_(anchor[name], alpha=weight)
            param.copy_(value)

    def deltas(self, origin: int = 0) -> list[dict[str, torch.Tensor]]:
        """anchor_k - anchor_origin for every other anchor k, over the moving parameters."""
        base = self.anchors[origin]
        return [{n: a[n] - base[n] for n in self.names} for k, a in enumerate(self.anchors) if k != origin]


def delta_geometry(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The norms of two weight deltas, their ratio ||first|| / ||second|| and the angle between them in
    degrees (over the parameters both hold, in float64)."""
    names = [n for n in first if n in second]
    dot = sum(float((first[n].double() * second[n].double()).sum()) for n in names)
    norm_a = math.sqrt(sum(float(first[n].double().pow(2).sum()) for n in names))
    norm_b = math.sqrt(sum(float(second[n].double().pow(2).sum()) for n in names))
    if norm_a == 0 or norm_b == 0:
        raise InterpolationError("a weight delta is zero: two of the models are identical")
    cosine = max(-1.0, min(1.0, dot / (norm_a * norm_b)))
    return {"norm_first": norm_a, "norm_second": norm_b, "norm_ratio": norm_a / norm_b, "angle_degrees": math.degrees(math.acos(cosine))}


def point_key(coordinates: Sequence[float]) -> str:
    """The key of a grid point in a stored grid: its coordinates, comma-separated."""
    return ",".join(f"{c:g}" for c in coordinates)


@dataclass
class GridPoint:
    """One point: its coordinates (alpha, or a1 and a2) and its anchor weights."""

    coordinates: tuple[float, ...]
    weights: tuple[float, ...]


def line_points(alphas: Sequence[float]) -> list[GridPoint]:
    """theta(alpha) = (1 - alpha) anchor_0 + alpha anchor_1 (Eq. 1-2; Eq. to WiSE-FT's mixing)."""
    return [GridPoint((a,), (1.0 - a, a)) for a in alphas]


def plane_points(first: Sequence[float], second: Sequence[float]) -> list[GridPoint]:
    """theta = anchor_0 + a1 (anchor_1 - anchor_0) + a2 (anchor_2 - anchor_0) (Eq. 3), every (a1, a2)."""
    return [GridPoint((a1, a2), (1.0 - a1 - a2, a1, a2)) for a1 in first for a2 in second]


def evaluate_grid(
    points: AffinePoints,
    grid: Sequence[GridPoint],
    sets: Mapping[str, EncodedSplit],
    store: Path,
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
    on_point: Callable[[GridPoint], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Score every point of `grid` on `sets`: `{point key: {language: {metric: value}}}`.

    Scores are written to `store` (JSON, atomically) after each point; points already in it are not
    recomputed, so a grid interrupted and rerun computes only the missing ones. The model is left at
    the last point computed (move it back to an anchor to use it again).
    """
    done: dict[str, Any] = read_json(store) if store.exists() else {}
    languages = sorted(sets)
    for point in grid:
        key = point_key(point.coordinates)
        if key in done and sorted(done[key]) == languages:
            continue
        if on_point is not None:
            on_point(point)
        points.move_to(point.weights)
        done[key] = evaluate_sets(points.model, sets, batch_size, dtype).scores
        write_json_atomic(store, done)
    return {point_key(p.coordinates): done[point_key(p.coordinates)] for p in grid}


@dataclass
class SeedSummary:
    """Mean, sample variance and 95% confidence interval over seeds of one value."""

    mean: float
    variance: float | None
    low: float | None
    high: float | None
    n: int


def summarize_seeds(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Mean, sample variance and Student's t confidence interval of `values` (None where n = 1)."""
    n, mean = len(values), fmean(values)
    if n < 2:
        return SeedSummary(mean, None, None, None, n)
    spread = variance(values)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(spread / n)
    return SeedSummary(mean, spread, mean - half, mean + half, n)


def normalised(scores: Mapping[str, Mapping[str, Mapping[str, float]]], reference: str, metric: str) -> dict[str, dict[str, float]]:
    """`{point: {language: score / score at the reference point}}` of one seed's grid, for `metric`."""
    base = scores[reference]
    return {
        key: {lang: by_lang[lang][metric] / base[lang][metric] if base[lang][metric] else math.nan for lang in by_lang}
        for key, by_lang in scores.items()
    }
