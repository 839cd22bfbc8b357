"""NoisyTune (Wu, Wu, Qi and Huang, ACL 2022, "NoisyTune: A Little Noise Can Help You Finetune Pretrained
Language Models Better", Eq. 1), a baseline of Guo et al. (ACL 2023), Table 2.

Before fine-tuning, every weight matrix W of the pretrained model gets uniform noise scaled by its own
standard deviation: W <- W + U(-lambda/2, lambda/2) * std(W), lambda = 0.15 (the NoisyTune paper's
value). Settled here: "weight matrices" are the parameters with two or more dimensions of the pretrained
encoder (selector `all - head` by default: the freshly initialised task head carries no pretrained
knowledge to perturb); biases and LayerNorm vectors are left as they are (set `matrices_only: false`
to perturb them too). The noise is drawn from a generator seeded by the run's seed, so every method
compared at a seed starts from the same perturbed model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from xlgap.methods.base import Method, PrepareContext, register_method
from xlgap.models.anatomy import model_anatomy
from xlgap.utils.options import option


@register_method("noisytune")
@dataclass(eq=False)
class NoisyTune(Method):
    """NoisyTune (Wu et al., ACL 2022): before training, add U(-noise/2, noise/2) * std(W) to every selected
    weight matrix W, seeded by the run's seed."""

    noise: float = option(0.15, "lambda of NoisyTune's Eq. 1: W += U(-lambda/2, lambda/2) * std(W) (>= 0)")
    select: str = option("all - head", "selector of the parameters perturbed")
    matrices_only: bool = option(
        True, "perturb only parameters with two or more dimensions (not biases or LayerNorms)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise < 0:
            raise ValueError(f"noisytune noise: expected lambda >= 0, got {self.noise}")

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Add U(-noise/2, noise/2) * std(W) to every selected weight matrix, in place."""
        names = set(model_anatomy(model).select(self.select))
        generator = torch.Generator().manual_seed(context.seed + 104_729)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name not in names or (self.matrices_only and param.dim() < 2) or param.numel() < 2:
                    continue
                uniform = torch.rand(param.shape, generator=generator, dtype=torch.float32) - 0.5
                param.add_((uniform * self.noise * param.float().std()).to(param.device, param.dtype))
