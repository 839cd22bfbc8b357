"""Layer surgery: freeze a named set of parameters before training."""

from __future__ import annotations

from torch import nn

from xlgap.methods.base import Method, PrepareContext
from xlgap.models.anatomy import model_anatomy


class Freeze(Method):
    """Keep the parameters named by `select` (a selector, e.g. `word_embeddings`) at their pretrained values."""

    name = "freeze"

    def __init__(self, select: str):
        self.select = select

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Set requires_grad=False on the selected parameters (the optimizer then leaves them out)."""
        names = set(model_anatomy(model).select(self.select))
        for name, param in model.named_parameters():
            if name in names:
                param.requires_grad_(False)
