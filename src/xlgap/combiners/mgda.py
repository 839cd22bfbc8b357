"""MGDA: the minimum-norm point of the convex hull of the per-language gradients (Désidéri, C. R. Math.
2012; Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, Eq. 3):
w = argmin_{w in simplex} |sum_t w_t g_t|^2 = argmin 1/2 w^T G w. Its direction d satisfies
g_t . d >= |d|^2 >= 0 for every t, a common descent direction (zero at a Pareto-stationary point).

Solved exactly as a QP (`combiners/qp.py`) rather than with TorchJD's `MGDAWeighting`, whose Frank-Wolfe
loop stops at a tolerance of 1e-3 on its step: MGDA is also LF-MLF's fallback and its first update
(Algorithm 1 with c = 0), and both must be the exact min-norm point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlgap.combiners.base import Combiner, CombinerError, UpdateGradients, register_combiner
from xlgap.combiners.qp import solve_simplex_qp


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    """The simplex weights of the min-norm point of the hull of gradients with Gram matrix `gram`."""
    w = solve_simplex_qp(gram)
    if w is None:
        raise CombinerError(f"the min-norm QP failed on the Gram matrix {gram.tolist()} (is it finite?)")
    return w


@register_combiner("mgda")
@dataclass(eq=False)
class MGDA(Combiner):
    """MGDA (Sener and Koltun, NeurIPS 2018): the weights of the min-norm point of the convex hull of the
    language gradients."""

    def weights(self, grads: UpdateGradients) -> torch.Tensor:
        return min_norm_weights(grads.gram)
