"""Methods: plain PyTorch components that change how a model is fine-tuned, and their registry.

Each method registers itself with `@register_method("<name>")` next to its class; importing the modules
below fills `METHODS`. A new method is one module with one decorated class, imported here."""

from __future__ import annotations

import difflib
import inspect
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
from xlgap.methods.efficient import Adapter, BitFit, LoRA
from xlgap.methods.fsf import FineTuningFast, FineTuningSlow, FineTuningSlowFast
from xlgap.methods.noisytune import NoisyTune
from xlgap.methods.regularize import EWC, L2
from xlgap.methods.surgery import Freeze, LrScale, Reinit
from xlgap.utils.errors import UserError

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
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise MethodError(f"{where}.name: unknown method {name!r}{hint}; expected one of {', '.join(sorted(METHODS))}")
    factory = METHODS[name]
    allowed = set(inspect.signature(factory).parameters)
    for key in spec:
        if key not in allowed:
            raise MethodError(f"{where}.{key}: not an option of method '{name}'; expected one of {sorted(allowed)}")
    try:
        return factory(**spec)
    except (TypeError, ValueError) as err:
        raise MethodError(f"{where} ({name}): {err}") from None


def build_methods(specs: list[dict[str, Any]]) -> Compose:
    """Compose the methods of a config's `methods:` list, in order."""
    return Compose(*(build_method(spec, f"methods.{i}") for i, spec in enumerate(specs)))
