"""Registries of named components (methods, gradient combiners): a class decorator that files a class
under its config name, and the one builder that turns a config entry into an instance, with errors that
name the config key, suggest the closest name and list what is allowed."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any


def registrar(registry: dict[str, type], what: str) -> Callable[[str], Callable[[type], type]]:
    """A decorator factory: `@register("<name>")` files a class in `registry` under `name`, which also
    becomes its `name` attribute; `what` names the kind of component in errors."""

    def register(name: str) -> Callable[[type], type]:
        def decorate(cls: type) -> type:
            if name in registry and registry[name] is not cls:
                raise ValueError(f"{what} name {name!r} is registered twice ({registry[name].__name__}, {cls.__name__})")
            cls.name = name
            registry[name] = cls
            return cls

        return decorate

    return register


def build_registered(
    registry: dict[str, type],
    name: Any,
    options: dict[str, Any],
    error: type[Exception],
    what: str,
    name_key: str,
    options_key: str,
) -> Any:
    """`registry[name](**options)`. An unknown name is an `error` naming `name_key` (with the closest
    registered name); an unknown option one naming `options_key + option`; a value the class refuses
    (TypeError, ValueError) one naming `options_key`."""
    if name not in registry:
        close = difflib.get_close_matches(str(name), registry, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise error(f"{name_key}: unknown {what} {name!r}{hint}; expected one of {', '.join(sorted(registry))}")
    factory = registry[name]
    allowed = set(inspect.signature(factory).parameters)
    for key in options:
        if key not in allowed:
            raise error(f"{options_key}{key}: not an option of {what} '{name}'; expected one of {sorted(allowed)}")
    try:
        return factory(**options)
    except (TypeError, ValueError) as err:
        raise error(f"{options_key.rstrip('.')} ({name}): {err}") from None
