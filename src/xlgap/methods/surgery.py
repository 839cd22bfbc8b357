"""Layer surgery: freeze, re-initialise, or scale the learning rate of a named set of parameters.

The analyses of Guo et al. (ACL 2023), Section 2 (Table 1, Table 6, Figures 3-4) are these methods over
selectors: re-initialise one layer (`reinit: layers[i]`) or one component of the first four
(`layers[0:4].attention`); freeze one layer, or the first four (all / attention / feed-forward);
fine-tune only the last k layers (`freeze: all - layers[-k:] - head`); multiply the lr of the last two
layers by 10 (`lr_scale: layers[-2:].attention`, scale 10). `configs/fsf-surgery/` has them as sweep grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from xlgap.methods.base import Method, ParamGroup, PrepareContext, register_method
from xlgap.models.anatomy import model_anatomy
from xlgap.utils.options import REQUIRED, option


@register_method("freeze")
@dataclass(eq=False)
class Freeze(Method):
    """Keep the parameters named by `select` (a selector, e.g. `word_embeddings`) at their pretrained values."""

    select: str = option(
        REQUIRED, "selector of the parameters kept at their pretrained values (e.g. word_embeddings)"
    )

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Set requires_grad=False on the selected parameters (the optimizer then leaves them out)."""
        names = set(model_anatomy(model).select(self.select))
        for name, param in model.named_parameters():
            if name in names:
                param.requires_grad_(False)


@register_method("reinit")
@dataclass(eq=False)
class Reinit(Method):
    """Re-initialise the parameters named by `select` before training, with the model's own initialiser
    (`PreTrainedModel._init_weights`: normal(0, initializer_range) matrices, zero biases, unit
    LayerNorms), seeded by the run's seed; the other parameters are untouched."""

    select: str = option(
        REQUIRED, "selector of the parameters re-initialised before training (e.g. layers[0])"
    )

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Re-initialise the selected parameters, module by module."""
        names = set(model_anatomy(model).select(self.select))
        init = getattr(model, "_init_weights", None)
        if init is None:
            raise ValueError("reinit needs a transformers PreTrainedModel (it uses the model's own _init_weights)")
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(context.seed + 7_919)  # the same re-initialisation for every method at a seed
        try:
            for module_name, module in model.named_modules():
                own = {n: p for n, p in module.named_parameters(recurse=False)}
                chosen = {n for n in own if (f"{module_name}.{n}" if module_name else n) in names}
                if not chosen:
                    continue
                kept = {n: p.detach().clone() for n, p in own.items() if n not in chosen}
                for n in chosen:
                    # transformers' init functions skip tensors loaded from a checkpoint (this flag)
                    own[n]._is_hf_initialized = False
                with torch.no_grad():
                    init(module)
                    for n, value in kept.items():
                        own[n].copy_(value)
        finally:
            torch.random.set_rng_state(generator_state)


@register_method("lr_scale")
@dataclass(eq=False)
class LrScale(Method):
    """Multiply the learning rate of the parameters named by `select` by a constant `scale`."""

    select: str = option(
        REQUIRED, "selector of the parameters whose learning rate is scaled (e.g. layers[-2:].attention)"
    )
    scale: float = option(10.0, "the constant factor on their learning rate (> 0)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale <= 0:
            raise ValueError(f"lr_scale scale: expected a positive factor, got {self.scale}")

    def param_groups(self, model: nn.Module) -> dict[str, ParamGroup]:
        """One group, `lr_scale`, with the static scale."""
        return {f"lr_scale[{self.select}]": ParamGroup(tuple(model_anatomy(model).select(self.select)), self.scale)}
