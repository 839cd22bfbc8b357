"""L2 regularisation towards the pretrained weights ("Frustratingly simple regularization to improve
zero-shot cross-lingual robustness", anonymous ACL submission, Eq. 1) and its decoupled form.

`l2` adds `strength / 2 * sum_i (theta_i - theta*_i)^2` to the task loss over the parameters a selector
names (default: every encoder weight, `all - head`: the task head has no pretrained value to keep),
theta* the pretrained weights, held once in the trainer's shared reference copy (no second model).
With `mode: decoupled` the pull is applied in the optimizer step instead, as AdamW decouples weight
decay: after each step, theta <- theta - lr * strength * (theta - theta*), with the lr the step used for
that parameter (so FSF's multipliers scale it too). In penalty form the pull passes through Adam's
normalisation (a weight far from theta* but with a large gradient variance is pulled less); decoupled,
every weight is pulled by the same fraction of its distance.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xlgap.methods.base import Method, PrepareContext, register_method
from xlgap.methods.fisher_file import Fisher
from xlgap.models.anatomy import model_anatomy

L2_MODES = ("penalty", "decoupled")


@register_method("l2")
class L2(Method):
    """Keep the selected weights near their pretrained values (see the module docstring)."""

    def __init__(self, strength: float = 0.01, select: str = "all - head", mode: str = "penalty"):
        if strength < 0:
            raise ValueError(f"l2 strength: expected lambda >= 0, got {strength}")
        if mode not in L2_MODES:
            raise ValueError(f"l2 mode: expected one of {', '.join(L2_MODES)}, got {mode!r}")
        self.strength, self.select, self.mode = strength, select, mode
        self.anchor: dict[str, torch.Tensor] = {}

    def reference_parameters(self, model: nn.Module) -> set[str]:
        """The trainable parameters the selector names."""
        names = set(model_anatomy(model).select(self.select))
        return {n for n, p in model.named_parameters() if n in names}

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Take the anchor theta* from the shared reference copy (the weights before any method changed them)."""
        self.anchor = context.references.get(self.reference_parameters(model))

    def _pairs(self, model: nn.Module):
        for name, param in model.named_parameters():
            if name in self.anchor and param.requires_grad:
                yield name, param, self.anchor[name]

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """strength / 2 * the squared distance to the anchor (penalty mode)."""
        if self.mode != "penalty" or not self.anchor:
            return None
        total = sum(((p.float() - a.float()) ** 2).sum() for _, p, a in self._pairs(model))
        return 0.5 * self.strength * total

    def post_step(self, model: nn.Module, lr_of) -> None:
        """theta <- theta - lr * strength * (theta - theta*) after each optimizer step (decoupled mode)."""
        if self.mode != "decoupled":
            return
        with torch.no_grad():
            for name, param, anchor in self._pairs(model):
                param.sub_(lr_of(name) * self.strength * (param - anchor))


@register_method("ewc")
class EWC(Method):
    """Elastic weight consolidation towards the pretrained weights (same paper, Eq. 2): strength / 2 *
    sum_i F_i (theta_i - theta*_i)^2 with F the diagonal Fisher of a target language's masked-LM loss
    (`xlgap fisher`). Several Fisher files add several penalties (the paper's Appendix F, e.g. fr and
    en); a Fisher of a mixed corpus is one file. The paper trains one model per target language, each
    with that language's Fisher: `configs/sweeps/` pairs each target with its Fisher."""

    def __init__(self, fisher: str | list[str], strength: float = 1.0):
        if strength < 0:
            raise ValueError(f"ewc strength: expected lambda >= 0, got {strength}")
        self.files = [fisher] if isinstance(fisher, str) else list(fisher)
        if not self.files:
            raise ValueError("ewc fisher: expected a Fisher file (xlgap fisher ... -o FILE) or a list of them")
        self.strength = strength
        self.fishers: list[dict[str, torch.Tensor]] = []
        self.anchor: dict[str, torch.Tensor] = {}

    def _load(self) -> list[dict[str, torch.Tensor]]:
        return [Fisher.load(Path(f)).tensors for f in self.files]

    def reference_parameters(self, model: nn.Module) -> set[str]:
        """The parameters any of the Fishers covers (they must all be parameters of the model)."""
        names = {n for n, _ in model.named_parameters()}
        covered = set().union(*(set(f) for f in self._load()))
        unknown = sorted(covered - names)
        if unknown:
            raise ValueError(f"ewc fisher: {len(unknown)} of its tensors are not parameters of this model, e.g. {unknown[0]!r}")
        return covered

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Load the Fishers onto the model's device and take the anchor from the shared reference copy."""
        device = next(model.parameters()).device
        self.fishers = [{k: v.to(device) for k, v in f.items()} for f in self._load()]
        self.anchor = context.references.get(self.reference_parameters(model))

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if not self.fishers:
            return None
        params = dict(model.named_parameters())
        total = sum(
            (f[n] * (params[n].float() - self.anchor[n].float()) ** 2).sum()
            for f in self.fishers
            for n in f
            if params[n].requires_grad
        )
        return 0.5 * self.strength * total
