"""Registries of named components (methods, gradient combiners): a class decorator that files a class
under its config name, and the one builder that turns a config entry into an instance, with errors that
name the config key, suggest the closest name and list what is allowed.

Every registered class is a dataclass whose init fields are its options (declared with
`xlgap.utils.options.option`, which carries their help text), so the builder checks each value against
its field's type before anything runs and `xlgap methods` can list them."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from xlgap.utils.options import coerce, option_hints, options_of


def registrar(registry: dict[str, type], what: str) -> Callable[[str], Callable[[type], type]]:
    """A decorator factory: `@register("<name>")` files a dataclass in `registry` under `name`, which
    also becomes its `name` attribute; `what` names the kind of component in errors."""

    def register(name: str) -> Callable[[type], type]:
        def decorate(cls: type) -> type:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(
                    f"{what} {cls.__name__}: decorate it with @dataclass(eq=False) under @register; its fields are its options"
                )
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
    hints = option_hints(factory)
    checked = {}
    for key, value in options.items():
        if key not in hints:
            raise error(f"{options_key}{key}: not an option of {what} '{name}'; expected one of {sorted(hints)}")
        checked[key] = coerce(value, hints[key], f"{options_key}{key}", error)
    for info in options_of(factory):
        if info.default is None and info.name not in options:
            raise error(f"{options_key}{info.name}: {what} '{name}' needs this option ({info.help or 'no default'})")
    try:
        return factory(**checked)
    except (TypeError, ValueError) as err:
        raise error(f"{options_key.rstrip('.')} ({name}): {err}") from None
