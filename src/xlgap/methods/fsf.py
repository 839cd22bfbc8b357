"""Fine-tuning Slow and Fast (Guo et al., ACL 2023), and its halves FS and FF.

Four learning-rate policies act on four weight sets, switched by a phase detector on the training loss
(Eq. 1-3 of the paper; `shared/notes/papers.md` section 1):

- policy I   (set S1, default `layers[0:10]`):           K = c1 while in phase P1;
- policy II  (set S2, default `layers[0:4].ffn`):        K = R(phi) = max(1 - phi^r, 0) outside P1;
- policy III (set V1, default `layers[-2:]`):            never slowed down in P1 (K = 1);
- policy IV  (set V2, default `layers[-2:].attention`):  K = c2 outside P1 (with `iv_gate="cka"`,
  only while the CKA of the last two layers to the pretrained model is still falling, Section 3.2);
- every other weight keeps K = 1.

With windows of `w` updates, prev = mean(loss[t-2w : t-w]) and recent = mean(loss[t-w : t]):
the update is in P1 when prev - recent > threshold, and phi = recent / prev.

Settled ambiguities (the same everywhere, per the digest):
- the multiplier of update t+1 is computed from the losses of the t completed updates (it is set by
  the lr scheduler before the update, like any schedule); before 2 windows exist the update is in P1;
- K multiplies the scheduled lr of AdamW, so it scales Adam's update, not the raw gradient;
- "weights" are weight matrices with their biases and LayerNorms (the anatomy's components);
- policy III is realised as an exclusion: weights in V1 are removed from policy I's set, so that
  "do not slow V1 down in P1" holds even when the sets overlap (with the paper's sets they do not);
- policies compose by product, which reproduces Eq. 2 because each is 1 when it is not active;
- CKA gate: the trainer measures each layer's CKA to the pretrained model on the training batch every
  `cka_every` updates; the CKA of the top layers "is still falling" until the mean over the last two
  layers at a measurement is not below the one before it (with fewer than two measurements, it is
  falling). A measurement taken after update u acts from the lr of update u + 2 on (the lr of u + 1 is
  set before it is taken), in training and when the multipliers are recomputed for plots alike.

FS is policies I+II only, FF is policies III+IV only; the Table 8 ablations are other assignments of
sets to policies (see `configs/fsf-ablations/`). The default sets are for 12-layer encoders; other depths
get proportionally scaled sets and a warning.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from torch import nn

from xlgap.methods.base import Method, ParamGroup, TrainingStats
from xlgap.models.anatomy import model_anatomy

log = logging.getLogger(__name__)

PAPER_LAYERS = 12
POLICIES = ("I", "II", "III", "IV")
SET_OF_POLICY = {"I": "S1", "II": "S2", "III": "V1", "IV": "V2"}
PAPER_SETS = {
    "I": "layers[0:10]",
    "II": "layers[0:4].ffn",
    "III": "layers[-2:]",
    "IV": "layers[-2:].attention",
}


def loss_windows(losses: list[float], window: int) -> tuple[float, float] | None:
    """Means of the two most recent windows of `window` losses: (previous, recent), or None if too few."""
    if len(losses) < 2 * window:
        return None
    previous = losses[-2 * window : -window]
    recent = losses[-window:]
    return sum(previous) / window, sum(recent) / window


def in_phase_one(losses: list[float], window: int, threshold: float) -> bool:
    """True while the loss falls fast: previous-window mean minus recent-window mean above `threshold`.

    Before two windows of losses exist, the update counts as phase P1.
    """
    means = loss_windows(losses, window)
    if means is None:
        return True
    previous, recent = means
    return previous - recent > threshold


def loss_ratio(losses: list[float], window: int) -> float | None:
    """phi = recent-window mean / previous-window mean, or None before two windows exist."""
    means = loss_windows(losses, window)
    if means is None:
        return None
    previous, recent = means
    return recent / previous if previous > 0 else 1.0


def adaptive_multiplier(phi: float, r: float) -> float:
    """R(phi) = max(1 - phi^r, 0): near 1 while the loss falls fast, 0 once it stalls or rises."""
    return max(1.0 - phi**r, 0.0)


CKA_TOP_LAYERS = 2


def top_cka(measurement: dict[str, Any]) -> float:
    """Mean CKA to the pretrained model of the last two layers in one measurement."""
    top = measurement["layers"][-CKA_TOP_LAYERS:]
    return sum(top) / len(top)


def cka_still_falling(measurements: list[dict[str, Any]]) -> bool:
    """True until the top layers' CKA at the latest measurement is not below the one before it."""
    if len(measurements) < 2:
        return True
    return top_cka(measurements[-1]) < top_cka(measurements[-2])


def calibrate_threshold(losses: list[float], window: int, p1_fraction: float = 0.2) -> float:
    """A phase-P1 threshold for short runs, from the loss curve of a plain fine-tuning run.

    Guo et al. observe P1 over about the first 20% of updates (Section 2.2) and set 0.1 for runs of
    10^4-10^5 updates with windows of 100. For a run of a few hundred updates, this returns the largest
    drop between consecutive windows that the reference curve shows after the first `p1_fraction` of
    its updates (rounded up to 0.01), so that on that curve P1 is exactly the first `p1_fraction`
    when `window` is `p1_fraction / 2` of the run (the first two windows are P1 by definition).
    """
    start = max(2 * window, round(p1_fraction * len(losses)))
    drops = []
    for t in range(start, len(losses) + 1):
        previous, recent = loss_windows(losses[:t], window)
        drops.append(previous - recent)
    if not drops:
        raise ValueError(f"a loss curve of {len(losses)} updates is too short for windows of {window}")
    return math.ceil(max(max(drops), 0.0) * 100) / 100


def depth_scaled_sets(num_layers: int) -> dict[str, str]:
    """The paper's default sets scaled to `num_layers` (identical to the paper's at 12 layers)."""
    if num_layers == PAPER_LAYERS:
        return dict(PAPER_SETS)
    slow = max(1, round(10 * num_layers / PAPER_LAYERS))
    key = max(1, round(4 * num_layers / PAPER_LAYERS))
    top = max(1, round(2 * num_layers / PAPER_LAYERS))
    return {
        "I": f"layers[0:{slow}]",
        "II": f"layers[0:{key}].ffn",
        "III": f"layers[-{top}:]",
        "IV": f"layers[-{top}:].attention",
    }


class FineTuningSlowFast(Method):
    """FSF: slow down cross-lingual weights while the loss falls fast, speed up task weights later.

    `policies` overrides the sets of `default_policies`: a policy ("I".."IV") maps to a selector, to
    one of the paper's sets by name ("S1", "S2", "V1", "V2"; depth-scaled for models that do not have
    12 layers), to "default" (the policy's own set: I->S1, II->S2, III->V1, IV->V2), or to None to
    switch it off (e.g. `{"IV": None}`, as the paper does for NER). Table 8's "S_II to S_I" ablation
    is `{"I": "S2", "II": "S1"}`.
    """

    name = "fsf"
    default_policies: tuple[str, ...] = POLICIES

    def __init__(
        self,
        c1: float = 0.01,
        c2: float = 10.0,
        r: float = 3.0,
        window: int = 100,
        threshold: float = 0.1,
        policies: dict[str, str | None] | None = None,
        iv_gate: str | None = None,
        cka_every: int = 100,
    ):
        unknown = sorted(set(policies or {}) - set(POLICIES))
        if unknown:
            raise ValueError(f"fsf policies: unknown policy {unknown}; expected keys among {list(POLICIES)}")
        policies = {**{p: "default" for p in self.default_policies}, **(policies or {})}
        if window <= 0:
            raise ValueError(f"fsf window: expected a positive number of updates, got {window}")
        if not 0 <= c1 <= 1:
            raise ValueError(f"fsf c1: expected a slow-down factor in [0, 1], got {c1}")
        if c2 < 1:
            raise ValueError(f"fsf c2: expected a speed-up factor >= 1, got {c2}")
        if r <= 0:
            raise ValueError(f"fsf r: expected a positive exponent, got {r}")
        if iv_gate not in (None, "cka"):
            raise ValueError(f"fsf iv_gate: expected null (policy IV for all of P2) or 'cka', got {iv_gate!r}")
        if cka_every <= 0:
            raise ValueError(f"fsf cka_every: expected a positive number of updates, got {cka_every}")
        if not any(policies.get(p) for p in POLICIES):
            raise ValueError("fsf policies: every policy is switched off; use plain fine-tuning instead")
        self.c1, self.c2, self.r = c1, c2, r
        self.window, self.threshold = window, threshold
        self.policies = policies
        self.iv_gate, self.every = iv_gate, cka_every
        self.selectors: dict[str, str] = {}

    def resolved_selectors(self, num_layers: int) -> dict[str, str]:
        """The selector of every active policy for a model with `num_layers` layers."""
        defaults = depth_scaled_sets(num_layers)
        by_name = {SET_OF_POLICY[p]: selector for p, selector in defaults.items()}
        resolved = {}
        for policy in POLICIES:
            selector = self.policies.get(policy)
            if selector == "default":
                selector = defaults[policy]
            selector = by_name.get(selector, selector)
            if selector:
                resolved[policy] = selector
        uses_paper_sets = any(self.policies.get(p) in ("default", *by_name) for p in POLICIES)
        if uses_paper_sets and num_layers != PAPER_LAYERS:
            log.warning(
                "FSF's sets were chosen for 12-layer models; this model has %d layers, so the paper's sets "
                "are scaled: %s",
                num_layers,
                {by: defaults[p] for p, by in SET_OF_POLICY.items()},
            )
        return resolved

    def param_groups(self, model: nn.Module) -> dict[str, ParamGroup]:
        """One group per active policy, named `fsf.policy_<I..IV>`; V1 is excluded from policy I."""
        anatomy = model_anatomy(model)
        self.selectors = self.resolved_selectors(anatomy.num_layers)
        chosen = {p: anatomy.select(sel) for p, sel in self.selectors.items()}
        if "I" in chosen and "III" in chosen:
            spared = set(chosen["III"])
            chosen["I"] = [n for n in chosen["I"] if n not in spared]
        return {f"fsf.policy_{p}": ParamGroup(tuple(names)) for p, names in chosen.items() if names}

    def multipliers_at(self, losses: list[float], cka: list[dict[str, Any]] = ()) -> dict[str, float]:
        """K of every policy for the next update, given the losses of the completed updates and the CKA
        measurements that may act on it (used only with `iv_gate="cka"`)."""
        phase_one = in_phase_one(losses, self.window, self.threshold)
        phi = loss_ratio(losses, self.window)
        speed_up = not phase_one and (self.iv_gate is None or cka_still_falling(list(cka)))
        values = {
            "I": self.c1 if phase_one else 1.0,
            "II": 1.0 if phase_one or phi is None else adaptive_multiplier(phi, self.r),
            "III": 1.0,
            "IV": self.c2 if speed_up else 1.0,
        }
        return {f"fsf.policy_{p}": values[p] for p in POLICIES if self.policies.get(p)}

    def lr_multipliers(self, step: int, stats: TrainingStats) -> dict[str, float]:
        return self.multipliers_at(stats.losses[:step], self._cka_before(step, stats))

    def probe_values(self, step: int, stats: TrainingStats) -> dict[str, Any]:
        losses = stats.losses[:step]
        phi = loss_ratio(losses, self.window)
        values: dict[str, Any] = {
            "phase": "P1" if in_phase_one(losses, self.window, self.threshold) else "P2",
            "phi": phi,
        }
        if self.iv_gate == "cka":
            measured = self._cka_before(step, stats)
            values["cka_top"] = top_cka(measured[-1]) if measured else None
            values["cka_falling"] = cka_still_falling(measured)
        return values

    def cka_every(self) -> int | None:
        return self.every if self.iv_gate == "cka" and self.policies.get("IV") else None

    @staticmethod
    def _cka_before(step: int, stats: TrainingStats) -> list[dict[str, Any]]:
        """The measurements that act on the update after `step` completed ones (taken before step)."""
        return [m for m in stats.cka if m["step"] < step]


class FineTuningSlow(FineTuningSlowFast):
    """FS: Fine-tuning Slow alone, policies I and II (the stability half)."""

    name = "fs"
    default_policies = ("I", "II")


class FineTuningFast(FineTuningSlowFast):
    """FF: Fine-tuning Fast alone, policies III and IV (the plasticity half)."""

    name = "ff"
    default_policies = ("III", "IV")
