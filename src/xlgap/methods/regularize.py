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

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from xlgap.methods.base import Method, PrepareContext, register_method
from xlgap.methods.fisher_file import Fisher
from xlgap.models.anatomy import model_anatomy
from xlgap.utils.options import REQUIRED, option


@register_method("l2")
@dataclass(eq=False)
class L2(Method):
    """L2 towards the pretrained weights theta* (Eq. 1): strength / 2 * sum (theta - theta*)^2 over the selected
    parameters, added to the loss or (mode: decoupled) applied as a pull in the optimizer step."""

    strength: float = option(
        0.01, "lambda of Eq. 1: the penalty is lambda / 2 * sum (theta - theta*)^2 (>= 0)"
    )
    select: str = option("all - head", "selector of the parameters pulled towards their pretrained values")
    mode: Literal["penalty", "decoupled"] = option(
        "penalty",
        "penalty: added to the task loss (Eq. 1); decoupled: theta -= lr * lambda * (theta - theta*) after each step",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strength < 0:
            raise ValueError(f"l2 strength: expected lambda >= 0, got {self.strength}")
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
@dataclass(eq=False)
class EWC(Method):
    """Elastic weight consolidation towards the pretrained weights (same paper, Eq. 2): strength / 2 *
    sum_i F_i (theta_i - theta*_i)^2 with F the diagonal Fisher of a target language's masked-LM loss
    (`xlgap fisher`). Several Fisher files add several penalties (the paper's Appendix F, e.g. fr and
    en); a Fisher of a mixed corpus is one file. The paper trains one model per target language, each
    with that language's Fisher: `fisher: {de: de.safetensors, zh: zh.safetensors}` makes `xlgap run`
    train one model per target, each with its own Fisher and scored on its own language
    (`xlgap.train.per_target`); one EWC object holds one model's Fishers."""

    fisher: str | list[str] | dict[str, str] = option(
        REQUIRED,
        "a Fisher file written by `xlgap fisher ... -o FILE`, a list of them (their penalties add), or "
        "{target language: file}: one model per target, each with its own Fisher",
    )
    strength: float = option(1.0, "lambda of Eq. 2: the penalty is lambda / 2 * sum F (theta - theta*)^2 (>= 0)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strength < 0:
            raise ValueError(f"ewc strength: expected lambda >= 0, got {self.strength}")
        if not self.fisher:
            raise ValueError("ewc fisher: expected a Fisher file (xlgap fisher ... -o FILE), a list of them, or {language: file}")
        if isinstance(self.fisher, dict):
            self.files = []  # one model per target: the runner gives each model its own file
        elif isinstance(self.fisher, str):
            self.files = [self.fisher]
        else:
            self.files = list(self.fisher)
        self.fishers: list[dict[str, torch.Tensor]] = []
        self.anchor: dict[str, torch.Tensor] = {}

    def _load(self) -> list[dict[str, torch.Tensor]]:
        if isinstance(self.fisher, dict):
            raise ValueError(
                "ewc fisher: a Fisher per target language means one model per target; xlgap run trains them "
                "(in your own script, build one EWC per target with that language's file)"
            )
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
