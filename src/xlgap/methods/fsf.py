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
the P1 test holds when prev - recent > threshold, and phi = recent / prev.

Phase P1 (settled by the xlgap task issue, which overrides the digest where they differ):
- `phase="latched"` (default): P1 is one initial phase, as the paper's text describes it ("the first
  phase P1 (the first 20% of iterations)", Section 2.2; "after the first phase", policy II): it holds
  until the test first fails and never returns. `phase="per_update"` re-evaluates the test at every
  update, the literal reading of Section 3.2 (later loss bumps, e.g. at epoch boundaries, flip it back).
- The detector starts after the learning-rate warm-up: updates before `warmup + 2w` are P1 by
  definition, and the windows only ever hold post-warm-up losses (during warm-up the loss is flat
  because the lr is tiny, not because learning has slowed down).
- `threshold` is the paper's drop per update (0.1 for windows of 100 updates), kept as the literal
  default, or `"auto"`: `auto_ratio` (0.5) times the drop between the first two post-warm-up windows.
  The paper's 0.1 is an absolute loss difference, so its meaning changes with the loss scale (3-way
  NLI vs 17-way tagging vs span extraction) and with the run length: on an XNLI-sized run of about
  120k updates P1 shrinks to the forced first windows. "auto" reads "the loss falls fast" relative to
  how fast this run's loss fell when the detector started: P1 ends once the window-to-window drop is
  below half the initial one. It is invariant to the loss scale, needs no reference run, and is
  computed from the run's own curve only (no dev or test data). The realised P1 share is reported
  with every result (`report`), and a warning fires when P1 covers less than 5% of the run.

Settled ambiguities (the same everywhere, per the digest):
- the multiplier of update t+1 is computed from the losses of the t completed updates (it is set by
  the lr scheduler before the update, like any schedule); before 2 post-warm-up windows exist the
  update is in P1;
- K multiplies the scheduled lr of AdamW, so it scales Adam's update, not the raw gradient;
- "weights" are weight matrices with their biases and LayerNorms (the anatomy's components);
- policy III is realised as an exclusion: weights in V1 are removed from policy I's set, so that
  "do not slow V1 down in P1" holds even when the sets overlap (with the paper's sets they do not);
- policies compose by product, which reproduces Eq. 2 because each is 1 when it is not active;
- CKA gate: the trainer measures each layer's CKA to the pretrained model every `cka_every` updates on
  a fixed probe batch (source-language dev text, the same every time, so that successive measurements
  differ by the weights only; `xlgap run` passes it, a user's script may, else the current training
  batch is used), with both models under the training precision. The gate watches the layers of
  policy IV's own set V2 (two for 12 layers, four for 24) and reads a trend, not noise: the CKA "is
  still falling" while the least-squares slope of their mean over the last `cka_trend` (3)
  measurements is below `-cka_tolerance` (0.001) per measurement; with fewer measurements it is
  falling. A measurement taken after update u acts from the lr of update u + 2 on (the lr of u + 1 is
  set before it is taken), in training and when the multipliers are recomputed for plots alike.

FS is policies I+II only, FF is policies III+IV only; the Table 8 ablations are other assignments of
sets to policies (see `configs/fsf-ablations/`). The default sets are for 12-layer encoders; other depths
get proportionally scaled sets and a warning.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from xlgap.methods.base import Method, ParamGroup, TrainingStats, register_method
from xlgap.models.anatomy import model_anatomy
from xlgap.utils.options import option

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


def loss_windows(losses: list[float], window: int, end: int | None = None) -> tuple[float, float] | None:
    """Means of the two windows of `window` losses that end at `end` (default: all of `losses`):
    (previous, recent), or None if `losses[:end]` holds too few. Only the windows are read, so a caller
    that asks at every update of a run pays for the run once, not for its square."""
    end = len(losses) if end is None else end
    if end < 2 * window:
        return None
    previous = losses[end - 2 * window : end - window]
    recent = losses[end - window : end]
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


def loss_ratio(losses: list[float], window: int, end: int | None = None) -> float | None:
    """phi = recent-window mean / previous-window mean of the windows ending at `end` (default: all of
    `losses`), or None before two windows exist."""
    means = loss_windows(losses, window, end)
    if means is None:
        return None
    previous, recent = means
    return recent / previous if previous > 0 else 1.0


AUTO_RATIO = 0.5
P1_WARNING_SHARE = 0.05


class PhaseDetector:
    """Phase P1 of every update from the loss curve (see the module docstring).

    `phase_one(losses, step, warmup)` says whether the update after `step` completed ones is in P1.
    The answer depends only on `losses[:step]`; prefix sums and the latched end are cached per loss
    list, so a run (or a replay for plots) costs O(1) per update.
    """

    def __init__(self, window: int, threshold: float | str, latched: bool = True, auto_ratio: float = AUTO_RATIO):
        self.window, self.threshold, self.latched, self.auto_ratio = window, threshold, latched, auto_ratio
        self._key: tuple[int, int] | None = None
        self._prefix: list[float] = [0.0]
        self._checked = 0
        self._end: int | None = None

    def _prepare(self, losses: list[float], warmup: int) -> None:
        key = (id(losses), warmup)
        if key != self._key or len(losses) < len(self._prefix) - 1:
            self._key, self._prefix, self._checked, self._end = key, [0.0], 0, None
        for value in losses[len(self._prefix) - 1 :]:
            self._prefix.append(self._prefix[-1] + value)

    def _mean(self, start: int, end: int) -> float:
        return (self._prefix[end] - self._prefix[start]) / (end - start)

    def drop(self, step: int) -> float:
        """prev - recent of the two windows ending at `step` (after `_prepare`)."""
        w = self.window
        return self._mean(step - 2 * w, step - w) - self._mean(step - w, step)

    def first_test(self, warmup: int) -> int:
        """The first step whose test is evaluated: two full windows after the warm-up."""
        return warmup + 2 * self.window

    def resolved_threshold(self, losses: list[float], warmup: int) -> float | None:
        """The threshold in loss units (None for "auto" before its calibration point is reached)."""
        if self.threshold != "auto":
            return float(self.threshold)
        start = self.first_test(warmup)
        if len(losses) < start:
            return None
        self._prepare(losses, warmup)
        return self.auto_ratio * max(self.drop(start), 0.0)

    def phase_one(self, losses: list[float], step: int, warmup: int = 0) -> bool:
        """Whether the update after `step` completed ones is in phase P1."""
        start = self.first_test(warmup)
        if step < start:
            return True
        self._prepare(losses, warmup)
        threshold = self.resolved_threshold(losses, warmup)
        if not self.latched:
            return self.drop(step) > threshold
        if self._end is not None:
            return step < self._end
        for t in range(max(self._checked + 1, start), step + 1):
            self._checked = t
            if not self.drop(t) > threshold:
                self._end = t
                return step < t
        return True

    def end(self, losses: list[float], warmup: int = 0) -> int | None:
        """Latched: the number of P1 updates (the step at which the test first failed); None if P1 lasts."""
        self.phase_one(losses, len(losses), warmup)
        return self._end


def adaptive_multiplier(phi: float, r: float) -> float:
    """R(phi) = max(1 - phi^r, 0): near 1 while the loss falls fast, 0 once it stalls or rises."""
    return max(1.0 - phi**r, 0.0)


CKA_TOP_LAYERS = 2
CKA_TREND = 3
CKA_TOLERANCE = 0.001
_LAYER_ATOM = re.compile(r"layers\[([^\]]*)\]")


def selector_layers(selector: str, num_layers: int) -> list[int]:
    """The layers the `layers[...]` atoms of a selector name, for a model of `num_layers` layers (the last
    two when it names none)."""
    chosen: set[int] = set()
    for inside in _LAYER_ATOM.findall(selector):
        if ":" in inside:
            start, stop = (int(v) if v.strip() else None for v in inside.split(":", 1))
            chosen |= set(range(num_layers)[start:stop])
        else:
            chosen.add(int(inside) % num_layers)
    return sorted(chosen) or list(range(num_layers))[-CKA_TOP_LAYERS:]


def top_cka(measurement: dict[str, Any], layers: list[int] | None = None) -> float:
    """Mean CKA to the pretrained model of `layers` (default: the last two) in one measurement."""
    values = measurement["layers"]
    picked = [values[i] for i in layers] if layers else values[-CKA_TOP_LAYERS:]
    return sum(picked) / len(picked)


def cka_slope(values: list[float]) -> float:
    """Least-squares slope of `values` per measurement."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    spread = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / spread


def cka_still_falling(
    measurements: list[dict[str, Any]],
    layers: list[int] | None = None,
    trend: int = CKA_TREND,
    tolerance: float = CKA_TOLERANCE,
) -> bool:
    """Whether the CKA of the gate's layers is still falling: the least-squares slope of their mean
    over the last `trend` measurements is below `-tolerance` per measurement. With fewer measurements it
    is taken as falling (the paper's curves fall from the start)."""
    if len(measurements) < max(trend, 2):
        return True
    return cka_slope([top_cka(m, layers) for m in measurements[-trend:]]) < -tolerance


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
        previous, recent = loss_windows(losses, window, end=t)
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


@register_method("fsf")
@dataclass(eq=False)
class FineTuningSlowFast(Method):
    """FSF: slow down cross-lingual weights while the loss falls fast, speed up task weights later.

    `policies` overrides the sets of `default_policies`: a policy ("I".."IV") maps to a selector, to
    one of the paper's sets by name ("S1", "S2", "V1", "V2"; depth-scaled for models that do not have
    12 layers), to "default" (the policy's own set: I->S1, II->S2, III->V1, IV->V2), or to None to
    switch it off (e.g. `{"IV": None}`, as the paper does for NER). Table 8's "S_II to S_I" ablation
    is `{"I": "S2", "II": "S1"}`.
    """

    default_policies = POLICIES

    c1: float = option(0.01, "policy I's slow-down factor K = c1 on S1 during phase P1, in [0, 1]")
    c2: float = option(10.0, "policy IV's speed-up factor K = c2 on V2 during phase P2 (>= 1)")
    r: float = option(3.0, "policy II's exponent: K = R(phi) = 1 - (1 - phi)^r on S2 during P2 (> 0)")
    window: int = option(100, "updates per loss window of the phase test and of phi (the paper's 100)")
    threshold: float | Literal["auto"] = option(
        0.1,
        "P1 lasts while (previous window mean - recent window mean) > threshold (Section 3.2); 'auto' calibrates it on the run's loss",
    )
    policies: dict[str, str | None] = option(
        {}, "per policy (I..IV): a selector, a set name (S1, S2, V1, V2), 'default', or null to switch it off"
    )
    iv_gate: Literal["cka"] | None = option(
        None, "null: policy IV acts all of P2; 'cka': only while the top layers' CKA still falls"
    )
    cka_every: int = option(100, "updates between CKA measurements when iv_gate is 'cka'")
    phase: Literal["latched", "per_update"] = option(
        "latched", "latched: P1 ends once and never returns; per_update: re-tested at every update"
    )
    auto_ratio: float = option(
        AUTO_RATIO,
        "with threshold 'auto': the threshold is this fraction of the drop between the first two post-warm-up windows, in (0, 1)",
    )
    cka_trend: int = option(
        CKA_TREND, "with iv_gate 'cka': how many measurements the falling trend spans (>= 2)"
    )
    cka_tolerance: float = option(
        CKA_TOLERANCE, "with iv_gate 'cka': the CKA rise tolerated while still counted as falling (>= 0)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.policies) - set(POLICIES))
        if unknown:
            raise ValueError(f"fsf policies: unknown policy {unknown}; expected keys among {list(POLICIES)}")
        self.policies = {**{p: "default" for p in self.default_policies}, **self.policies}
        if self.window <= 0:
            raise ValueError(f"fsf window: expected a positive number of updates, got {self.window}")
        if not 0 <= self.c1 <= 1:
            raise ValueError(f"fsf c1: expected a slow-down factor in [0, 1], got {self.c1}")
        if self.c2 < 1:
            raise ValueError(f"fsf c2: expected a speed-up factor >= 1, got {self.c2}")
        if self.r <= 0:
            raise ValueError(f"fsf r: expected a positive exponent, got {self.r}")
        if self.cka_every <= 0:
            raise ValueError(f"fsf cka_every: expected a positive number of updates, got {self.cka_every}")
        if not any(self.policies.get(p) for p in POLICIES):
            raise ValueError("fsf policies: every policy is switched off; use plain fine-tuning instead")
        if not 0 < self.auto_ratio < 1:
            raise ValueError(f"fsf auto_ratio: expected a fraction in (0, 1), got {self.auto_ratio}")
        if self.cka_trend < 2 or self.cka_tolerance < 0:
            raise ValueError(
                f"fsf cka_trend/cka_tolerance: expected >= 2 measurements and a tolerance >= 0, got {self.cka_trend}, {self.cka_tolerance}"
            )
        self.detector = PhaseDetector(
            self.window, self.threshold, latched=self.phase == "latched", auto_ratio=self.auto_ratio
        )
        self.selectors: dict[str, str] = {}
        self.declared: set[str] | None = None

    def resolved_selectors(self, num_layers: int, warn: bool = True) -> dict[str, str]:
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
        if warn and uses_paper_sets and num_layers != PAPER_LAYERS:
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
        empty = sorted(p for p, names in chosen.items() if not names)
        if empty:
            log.warning("FSF: the set of policy %s is empty on this model (after sparing V1); it acts on nothing", empty)
        groups = {f"fsf.policy_{p}": ParamGroup(tuple(names)) for p, names in chosen.items() if names}
        self.declared = set(groups)
        return groups

    def multipliers_at(
        self, losses: list[float], cka: list[dict[str, Any]] = (), step: int | None = None, warmup: int = 0
    ) -> dict[str, float]:
        """K of every policy for the update after `step` completed ones (default: all of `losses`), given
        the losses of the completed updates, the warm-up length and the CKA measurements that may act on
        it (used only with `iv_gate="cka"`). Only groups that have parameters are listed once
        `param_groups` has run."""
        step = len(losses) if step is None else step
        phase_one = self.detector.phase_one(losses, step, warmup)
        phi = loss_ratio(losses, self.window, end=step)
        speed_up = not phase_one and (self.iv_gate is None or self.cka_falling(list(cka)))
        values = {
            "I": self.c1 if phase_one else 1.0,
            "II": 1.0 if phase_one or phi is None else adaptive_multiplier(phi, self.r),
            "III": 1.0,
            "IV": self.c2 if speed_up else 1.0,
        }
        names = {f"fsf.policy_{p}": values[p] for p in POLICIES if self.policies.get(p)}
        return {g: k for g, k in names.items() if self.declared is None or g in self.declared}

    def lr_multipliers(self, step: int, stats: TrainingStats) -> dict[str, float]:
        return self.multipliers_at(stats.losses, self._cka_before(step, stats), step, stats.warmup_steps)

    def probe_values(self, step: int, stats: TrainingStats) -> dict[str, Any]:
        phi = loss_ratio(stats.losses, self.window, end=step)
        values: dict[str, Any] = {
            "phase": "P1" if self.detector.phase_one(stats.losses, step, stats.warmup_steps) else "P2",
            "phi": phi,
        }
        if self.iv_gate == "cka":
            measured = self._cka_before(step, stats)
            values["cka_top"] = top_cka(measured[-1], self.gate_layers(measured[-1])) if measured else None
            values["cka_falling"] = self.cka_falling(measured)
        return values

    def cka_interval(self) -> int | None:
        return self.cka_every if self.iv_gate == "cka" and self.policies.get("IV") else None

    def gate_layers(self, measurement: dict[str, Any]) -> list[int]:
        """The layers of policy IV's set (V2), which the CKA gate watches (24-layer models: four)."""
        num_layers = len(measurement["layers"])
        selector = self.resolved_selectors(num_layers, warn=False).get("IV", f"layers[-{CKA_TOP_LAYERS}:]")
        return selector_layers(selector, num_layers)

    def cka_falling(self, measurements: list[dict[str, Any]]) -> bool:
        """Whether the CKA of V2's layers still falls (see `cka_still_falling`)."""
        if not measurements:
            return True
        return cka_still_falling(measurements, self.gate_layers(measurements[-1]), self.cka_trend, self.cka_tolerance)

    def report(self, stats: TrainingStats) -> dict[str, Any]:
        """The realised phase P1 (updates and share of the run), the threshold in loss units and the
        resolved sets; warns when P1 covers less than 5% of the run."""
        total = len(stats.losses)
        p1 = sum(self.detector.phase_one(stats.losses, t, stats.warmup_steps) for t in range(total))
        share = p1 / total if total else None
        if share is not None and share < P1_WARNING_SHARE:
            log.warning(
                "FSF: phase P1 covered %d of %d updates (%.1f%%): policy I barely acted. With the literal "
                "threshold on a long run this is expected; consider threshold: auto or a larger window",
                p1, total, 100 * share,
            )
        return {
            f"{self.name}.phase": self.phase,
            f"{self.name}.threshold": self.detector.resolved_threshold(stats.losses, stats.warmup_steps),
            f"{self.name}.p1_updates": p1,
            f"{self.name}.p1_share": share,
            f"{self.name}.selectors": dict(self.selectors),
        }

    @staticmethod
    def _cka_before(step: int, stats: TrainingStats) -> list[dict[str, Any]]:
        """The measurements that act on the update after `step` completed ones (taken before step)."""
        return [m for m in stats.cka if m["step"] < step]


@register_method("fs")
class FineTuningSlow(FineTuningSlowFast):
    """FS: Fine-tuning Slow alone, policies I and II (the stability half)."""
    default_policies = ("I", "II")


@register_method("ff")
class FineTuningFast(FineTuningSlowFast):
    """FF: Fine-tuning Fast alone, policies III and IV (the plasticity half)."""
    default_policies = ("III", "IV")
