"""Gradient combiners for multi-source fine-tuning: plain components that turn one update's per-language
gradients (their Gram matrices) into weights, and their registry.

Each combiner registers itself with `@register_combiner("<name>")` in its own module; importing the
modules below fills `COMBINERS`. A new combiner is one module with one decorated class, imported here."""

from xlgap.combiners.base import (
    COMBINERS,
    Combiner,
    CombinerError,
    UpdateGradients,
    build_combiner,
    register_combiner,
)
from xlgap.combiners.gradvac import GradVac, gradvac_weights
from xlgap.combiners.lf_mlf import LFMLF, lf_mlf_weights
from xlgap.combiners.mgda import MGDA, min_norm_weights
from xlgap.combiners.pcgrad import PCGrad, pcgrad_weights
from xlgap.combiners.uniform import Uniform

__all__ = [
    "COMBINERS",
    "Combiner",
    "CombinerError",
    "GradVac",
    "LFMLF",
    "MGDA",
    "PCGrad",
    "Uniform",
    "UpdateGradients",
    "build_combiner",
    "gradvac_weights",
    "lf_mlf_weights",
    "min_norm_weights",
    "pcgrad_weights",
    "register_combiner",
]
