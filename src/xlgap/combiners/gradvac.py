"""GradVac, Gradient Vaccine (Wang, Tsvetkov, Firat and Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021, Algorithm 1 and Eq. 4), applied
per layer as Mao et al. (NeurIPS 2022) compare it: for each layer l and each language i, for every other
language j in a random order, with phi = cos(g_i^l', g_j^l) and phi_hat^l_ij an EMA target,

    if phi < phi_hat:  g_i^l' += |g_i^l'| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                                 / (|g_j^l| sqrt(1 - phi_hat^2)) g_j^l
    phi_hat <- (1 - beta) phi_hat + beta phi,        beta = 0.01 (Mao et al.'s setting), phi_hat = 0 at first,

and apply the mean over i of the g_i^l' (the paper sums; see `combiners/base.py`).

Everything follows from the per-layer Gram matrices (g_i' = sum_k C_ik g_k): the same computation as
TorchJD's `GradVacWeighting`, which the tests compare against. It is not used directly because its EMA
targets live in private attributes that a checkpoint cannot restore (`_ensure_state` resets them unless a
private key matches), and an exact resume needs them; a layer here is one transformer block, the
embeddings, or the head (`UpdateGradients.layers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from xlgap.combiners.base import Combiner, UpdateGradients, order_seed, register_combiner
from xlgap.utils.options import option

EPS = 1e-8


def gradvac_weights(gram: torch.Tensor, phi_hat: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
    """The weights (summing the corrected gradients) of one GradVac step on one Gram matrix `[T, T]`;
    updates the EMA targets `phi_hat` `[T, T]` in place."""
    t = gram.shape[0]
    coefficients = torch.eye(t, dtype=torch.float64)
    for i in range(t):
        products = coefficients[i] @ gram  # g_i' . g_k for every k
        others = [j for j in range(t) if j != i]
        for j in [others[k] for k in torch.randperm(len(others), generator=generator).tolist()]:
            norm_i = math.sqrt(max(float(products @ coefficients[i]), 0.0))
            norm_j = math.sqrt(max(float(gram[j, j]), 0.0))
            phi = float(products[j]) / (norm_i * norm_j + EPS)
            target = float(phi_hat[i, j])
            if phi < target:
                root_phi, root_target = math.sqrt(max(1 - phi * phi, 0.0)), math.sqrt(max(1 - target * target, 0.0))
                step = norm_i * (target * root_phi - phi * root_target) / (norm_j * root_target + EPS)
                coefficients[i, j] += step
                products = products + step * gram[j]
            phi_hat[i, j] = (1 - beta) * target + beta * phi
    return coefficients.sum(0)


@register_combiner("gradvac")
@dataclass(eq=False)
class GradVac(Combiner):
    """GradVac (Wang et al., ICLR 2021): per layer, raise the cosine of each pair of language gradients
    to its EMA target phi_hat (kept as state) where it is below it, then average."""

    beta: float = option(0.01, "the EMA rate of the cosine targets phi_hat (GradVac's beta, in [0, 1])")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"gradvac beta: expected a rate in [0, 1], got {self.beta}")
        self.phi_hat: torch.Tensor | None = None

    def weights(self, grads: UpdateGradients) -> torch.Tensor:
        layers, t = grads.layer_grams.shape[0], grads.languages
        if self.phi_hat is None:
            self.phi_hat = torch.zeros(layers, t, t, dtype=torch.float64)
        generator = torch.Generator().manual_seed(order_seed(grads.seed, grads.step))
        rows = [gradvac_weights(gram, target, self.beta, generator) for gram, target in zip(grads.layer_grams, self.phi_hat, strict=True)]
        return torch.stack(rows) / t

    def report(self) -> dict[str, Any]:
        if self.phi_hat is None:
            return {}
        t = self.phi_hat.shape[-1]
        off = ~torch.eye(t, dtype=torch.bool)
        return {"mean_target_cosine": float(self.phi_hat[:, off].mean())}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.phi_hat is None else {"phi_hat": self.phi_hat}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        phi_hat = state.get("phi_hat")
        self.phi_hat = None if phi_hat is None else torch.as_tensor(phi_hat, dtype=torch.float64).clone()
