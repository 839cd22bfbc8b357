"""PCGrad, gradient surgery (Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020, Algorithm 1): for each g_i, for every other g_j in a random order, if
g_i^PC . g_j < 0, project g_i^PC onto the normal plane of g_j; apply the combination of the g_i^PC.

The weights come from TorchJD's `PCGradWeighting` (Gram matrix in, weights out). xlgap draws its random
orders from (seed, update) instead of the global generator, so a resumed run draws the same orders, and
divides by T: the mean of the corrected gradients, on the scale of the other combiners (see
`combiners/base.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchjd.aggregation import PCGradWeighting

from xlgap.combiners.base import Combiner, UpdateGradients, order_seed, register_combiner, seeded_global_rng


def pcgrad_weights(gram: torch.Tensor, seed: int) -> torch.Tensor:
    """The weights of the mean of the PCGrad-corrected gradients, orders drawn with `seed`."""
    with seeded_global_rng(seed):
        w = PCGradWeighting()(gram.to(torch.float64))
    return w / gram.shape[0]


@register_combiner("pcgrad")
@dataclass(eq=False)
class PCGrad(Combiner):
    """PCGrad (Yu et al., NeurIPS 2020): project each language gradient off the others it conflicts with
    (random order per update), then average."""

    def weights(self, grads: UpdateGradients) -> torch.Tensor:
        return pcgrad_weights(grads.gram, order_seed(grads.seed, grads.step))
