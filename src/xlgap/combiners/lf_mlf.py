"""LF-MLF, Less-Forgetting Multi-lingual Fine-tuning (Mao, Yang, Zhang, Wang, Guo and Liu, "Less-forgetting
Multi-lingual Fine-tuning", NeurIPS 2022): at update k, with g_t the gradient of source language t and
g_bar the sum of the combined gradients applied at updates 1 .. k-1 (Eq. 3), solve Problem 2 (Eq. 7)

    min_w 1/2 w^T G w + w^T c   s.t.  b_t^T w >= 0 (t = 1..T),  sum_t w_t = 1,  w_t >= 0,

with G_ij = g_i . g_j, c_t = g_t . g_bar and b_t = G e_t (so b_t^T w = (G w)_t = g_t . d: Eq. 5, the combined
direction d = sum_t w_t g_t descends for every language), and apply d (Eq. 8). The objective is
|g_bar + d|^2 / 2 up to a constant (Eq. 4): the step that keeps the total distance travelled from the
pretrained model, the bound on forgetting of Theorem 1, smallest. At k = 1, g_bar = 0 (Algorithm 1).

Settled here, where the paper is silent or ambiguous:
- g_bar sums the combined task gradients d as combined, before gradient clipping (not the optimizer's
  update, not multiplied by the learning rate or by other methods' lr multipliers): Eq. 3 writes it as
  sum_i sum_t w_t^i grad L_t(theta_{i-1}), and the paper clips nothing. Penalties of other methods (L2, EWC)
  are added after the combination and are not part of d or g_bar. g_bar is kept in float32 and
  checkpointed, so a resumed run solves the same problems.
- Algorithm 1 stops training when the feasible set is empty. It never is for a real Gram matrix (the
  min-norm point of the hull satisfies every constraint), so an empty set or a failed solve is a
  numerical failure: it is logged with its update, counted in results.json (`report()`), and the update
  uses the min-norm (MGDA) weights, or the run stops with `on_failure: stop`.
- The QP is solved in float64 by Clarabel (interior point, as the paper), from G and c accumulated in
  float64 (`combiners/qp.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from xlgap.combiners.base import Combiner, CombinerError, UpdateGradients, register_combiner
from xlgap.combiners.mgda import min_norm_weights
from xlgap.combiners.qp import solve_simplex_qp
from xlgap.utils.options import option

log = logging.getLogger(__name__)


def lf_mlf_weights(gram: torch.Tensor, c: torch.Tensor) -> torch.Tensor | None:
    """The solution of Problem 2 for Gram matrix `gram` and c = (g_t . g_bar)_t, or None if the solver
    finds no feasible optimum."""
    return solve_simplex_qp(gram, c, descent=True)


@register_combiner("lf-mlf")
@dataclass(eq=False)
class LFMLF(Combiner):
    """LF-MLF (Mao et al., NeurIPS 2022, Problem 2): at every update, the simplex weights whose combined step
    descends for every source language and stays closest to the accumulated direction g_bar (kept as state)."""

    on_failure: Literal["mgda", "stop"] = option(
        "mgda",
        "when the QP has no solution: mgda takes the min-norm weights for that update; stop ends the run with an error",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.direction: torch.Tensor | None = None
        self.failures: list[int] = []
        self.active: list[int] = [0, 0]  # updates solved; updates where a descent constraint was active

    def weights(self, grads: UpdateGradients) -> torch.Tensor:
        gram = grads.gram
        c = grads.dot(self.direction) if self.direction is not None else torch.zeros(grads.languages, dtype=torch.float64)
        w = lf_mlf_weights(gram, c)
        if w is None:
            self.failures.append(grads.step + 1)
            if self.on_failure == "stop":
                raise CombinerError(
                    f"LF-MLF: the QP of update {grads.step + 1} has no feasible optimum (Gram {gram.tolist()}, "
                    f"c {c.tolist()}); the run stops (train.multi_source.options.on_failure: stop)"
                )
            log.warning("LF-MLF: the QP of update %d failed; this update uses the min-norm (MGDA) weights", grads.step + 1)
            return min_norm_weights(gram)
        self.active[0] += 1
        self.active[1] += int(((gram @ w) / gram.diagonal().mean()).min() < 1e-6)
        return w

    def applied(self, direction: torch.Tensor) -> None:
        if self.direction is None:
            self.direction = torch.zeros_like(direction, dtype=torch.float32)
        self.direction += direction.float()

    def report(self) -> dict[str, Any]:
        return {
            "failed_solves": len(self.failures),
            "failed_updates": self.failures,
            "fallback": self.on_failure,
            "updates_with_active_descent_constraint": self.active[1],
            "solved_updates": self.active[0],
        }

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"failures": list(self.failures), "active": list(self.active)}
        if self.direction is not None:
            state["direction"] = self.direction
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.failures = list(state.get("failures", []))
        self.active = list(state.get("active", [0, 0]))
        direction = state.get("direction")
        self.direction = None if direction is None else torch.as_tensor(direction, dtype=torch.float32).clone()
