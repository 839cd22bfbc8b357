"""The small quadratic programs over the simplex that MGDA and LF-MLF solve, in float64 with an
interior-point solver (Clarabel through qpsolvers: the paper used an interior-point solver).

Written here, not taken from a multi-task library, because the problem has to be exactly Mao et al.'s
Problem 2 and a failure has to be visible: qpsolvers returns None when the solver does not reach an
optimum, and `solve_simplex_qp` passes that on instead of substituting anything.
"""

from __future__ import annotations

import numpy as np
import qpsolvers
import torch
from scipy import sparse

SOLVER = "clarabel"
SOLVER_SETTINGS = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}
"""Tighter than Clarabel's defaults (1e-8): a weight that should be 0 comes out below 1e-6."""
TOLERANCE = 1e-7
"""How far (relative to the problem's scale) a returned point may violate a constraint and still count."""


def solve_simplex_qp(
    gram: torch.Tensor, linear: torch.Tensor | None = None, descent: bool = False
) -> torch.Tensor | None:
    """argmin_w 1/2 w^T G w + w^T c over the simplex (sum w = 1, w >= 0), with (G w)_t >= 0 for every t
    when `descent`; float64 `[T]`, or None when the solver fails or its point is not feasible.

    The problem is divided by the mean squared gradient norm first (the minimiser does not change) so that
    the solver's tolerances mean the same thing for gradients of any size.
    """
    g = gram.detach().to(torch.float64).cpu().numpy()
    t = g.shape[0]
    scale = float(np.trace(g)) / t
    if not np.isfinite(g).all() or not scale > 0:
        return None
    p = g / scale
    q = np.zeros(t) if linear is None else linear.detach().to(torch.float64).cpu().numpy() / scale
    if not np.isfinite(q).all():
        return None
    inequality = {"G": sparse.csc_matrix(-p), "h": np.zeros(t)} if descent else {}
    try:
        w = qpsolvers.solve_qp(
            sparse.csc_matrix(p),
            q,
            A=sparse.csc_matrix(np.ones((1, t))),
            b=np.ones(1),
            lb=np.zeros(t),
            solver=SOLVER,
            **inequality,
            **SOLVER_SETTINGS,
        )
    except (ValueError, qpsolvers.SolverError):
        return None
    if w is None or not np.isfinite(w).all():
        return None
    if w.min() < -TOLERANCE or abs(w.sum() - 1) > TOLERANCE * t or (descent and (p @ w).min() < -TOLERANCE):
        return None
    w = np.clip(w, 0.0, None)
    return torch.from_numpy(w / w.sum())
