"""Uniform multi-source fine-tuning (Uniform-MLF in Mao et al., NeurIPS 2022, Sec. 3.3 and 5): w_t = 1/T,
the mean of the per-language gradients, at every update."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlgap.combiners.base import Combiner, UpdateGradients, register_combiner


@register_combiner("uniform")
@dataclass(eq=False)
class Uniform(Combiner):
    """Uniform: the mean of the language gradients, w_t = 1/T."""

    def weights(self, grads: UpdateGradients) -> torch.Tensor:
        return torch.full((grads.languages,), 1.0 / grads.languages, dtype=torch.float64)
