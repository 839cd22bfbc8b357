"""Layer surgery: freeze, re-initialise, or scale the learning rate of a named set of parameters.

The analyses of Guo et al. (ACL 2023), Section 2 (Table 1, Table 6, Figures 3-4) are these methods over
selectors: re-initialise one layer (`reinit: layers[i]`) or one component of the first four
(`layers[0:4].attention`); freeze one layer, or the first four (all / attention / feed-forward);
fine-tune only the last k layers (`freeze: all - layers[-k:] - head`); multiply the lr of the last two
layers by 10 (`lr_scale: layers[-2:].attention`, scale 10). `configs/fsf-surgery/` has them as sweep grids.
"""

from __future__ import annotations

import torch
from torch import nn

from xlgap.methods.base import Method, ParamGroup, PrepareContext, register_method
from xlgap.models.anatomy import model_anatomy


@register_method("freeze")
class Freeze(Method):
    """Keep the parameters named by `select` (a selector, e.g. `word_embeddings`) at their pretrained values."""

    def __init__(self, select: str):
        self.select = select

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Set requires_grad=False on the selected parameters (the optimizer then leaves them out)."""
        names = set(model_anatomy(model).select(self.select))
        for name, param in model.named_parameters():
            if name in names:
                param.requires_grad_(False)


@register_method("reinit")
class Reinit(Method):
    """Re-initialise the parameters named by `select` before training, with the model's own initialiser
    (`PreTrainedModel._init_weights`: normal(0, initializer_range) matrices, zero biases, unit
    LayerNorms), seeded by the run's seed; the other parameters are untouched."""

    def __init__(self, select: str):
        self.select = select

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
class LrScale(Method):
    """Multiply the learning rate of the parameters named by `select` by a constant `scale`."""

    def __init__(self, select: str, scale: float = 10.0):
        if scale <= 0:
            raise ValueError(f"lr_scale scale: expected a positive factor, got {scale}")
        self.select, self.scale = select, scale

    def param_groups(self, model: nn.Module) -> dict[str, ParamGroup]:
        """One group, `lr_scale`, with the static scale."""
        return {f"lr_scale[{self.select}]": ParamGroup(tuple(model_anatomy(model).select(self.select)), self.scale)}
