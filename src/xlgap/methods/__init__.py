"""Methods: plain PyTorch components that change how a model is fine-tuned, and their registry.

Each method registers itself with `@register_method("<name>")` next to its class; importing the modules
below fills `METHODS`. A new method is one module with one decorated class, imported here."""

from __future__ import annotations

from typing import Any

from xlgap.methods.base import (
    METHODS,
    Compose,
    Method,
    ParamGroup,
    PrepareContext,
    TrainingStats,
    register_method,
)
from xlgap.methods.efficient import Adapter, BitFit, LoRA, SoftPrompt
from xlgap.methods.fsf import FineTuningFast, FineTuningSlow, FineTuningSlowFast
from xlgap.methods.noisytune import NoisyTune
from xlgap.methods.regularize import EWC, L2
from xlgap.methods.surgery import Freeze, LrScale, Reinit
from xlgap.utils.errors import UserError
from xlgap.utils.registry import build_registered

__all__ = [
    "METHODS",
    "Adapter",
    "BitFit",
    "LoRA",
    "Compose",
    "EWC",
    "FineTuningFast",
    "FineTuningSlow",
    "FineTuningSlowFast",
    "Freeze",
    "L2",
    "LrScale",
    "Method",
    "NoisyTune",
    "ParamGroup",
    "PrepareContext",
    "Reinit",
    "SoftPrompt",
    "TrainingStats",
    "build_method",
    "register_method",
    "build_methods",
]


class MethodError(UserError, ValueError):
    """An unknown method, an unknown option, or an option value a method refuses."""


def build_method(spec: dict[str, Any], where: str = "methods") -> Method:
    """Instantiate one method from `{name: ..., option: value}`; errors name `where` and the bad key."""
    spec = dict(spec)
    name = spec.pop("name", None)
    return build_registered(METHODS, name, spec, MethodError, "method", f"{where}.name", f"{where}.")


def build_methods(specs: list[dict[str, Any]]) -> Compose:
    """Compose the methods of a config's `methods:` list, in order."""
    return Compose(*(build_method(spec, f"methods.{i}") for i, spec in enumerate(specs)))
