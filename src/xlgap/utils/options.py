"""Typed options: dataclass fields that carry help text, and the one checker that turns a YAML value into
the type a field declares.

Configs (`xlgap.config`), methods and gradient combiners are dataclasses; their fields are their
options. `option(default, help)` declares one with its help text (the `metadata={"help": ...}`
convention of transformers' `HfArgumentParser`), `options_of(cls)` lists them for `xlgap methods` and
the docs, and `coerce(value, annotation, key, error)` checks a value against a field's annotation
(YAML 1.1 reads `3e-5` as a string: float literals are accepted for numbers; `Literal[...]` gives the
allowed choices). Written here because `HfArgumentParser` parses command lines, not mappings, and
reports a wrong type as a traceback.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any

import yaml

REQUIRED = MISSING
"""The default of an option that has none: the user must give it."""


def option(default: Any = REQUIRED, help: str = "") -> Any:  # noqa: A002 - the HfArgumentParser name
    """A dataclass field with help text; a list or dict default is copied for every instance."""
    metadata = {"help": help}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionInfo:
    """One option of a component: its name, type in words, default as YAML (None when required) and help text."""

    name: str
    type: str
    default: str | None
    help: str


def option_hints(cls: type) -> dict[str, Any]:
    """The annotation of every init field of dataclass `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def options_of(cls: type) -> list[OptionInfo]:
    """The options of dataclass `cls` (its init fields), with their types, defaults and help text."""
    if not dataclasses.is_dataclass(cls):
        return []
    hints = option_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not MISSING:
            default = as_yaml(f.default)
        elif f.default_factory is not MISSING:
            default = as_yaml(f.default_factory())
        else:
            default = None
        out.append(OptionInfo(f.name, describe(hints[f.name]), default, f.metadata.get("help", "")))
    return out


def as_yaml(value: Any) -> str:
    """`value` as it would be written in a config (`true`, `null`, `[query, value]`, `all - head`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000).strip()
    return text.removesuffix("...").strip()


def describe(tp: Any) -> str:
    """An annotation in words, e.g. `a number`, `one of 'penalty', 'decoupled'`, `a list of strings`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return repr(choices[0]) if len(choices) == 1 else "one of " + ", ".join(repr(c) for c in choices)
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_plural(describe(item))}"
    if origin is dict:
        return f"a mapping to {_plural(describe(typing.get_args(tp)[1]))}"
    names = {
        float: "a number",
        int: "an integer",
        str: "a string",
        bool: "true or false",
        type(None): "null",
        Any: "any value",
    }
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(words: str) -> str:
    for article in ("a ", "an "):
        if words.startswith(article) and " or " not in words:
            noun = words[len(article) :]
            return "numbers" if noun == "number" else noun + "s"
    return words


def coerce(value: Any, tp: Any, key: str, error: Callable[[str], Exception]) -> Any:
    """`value` checked against the annotation `tp` and returned (ints and float literals accepted for
    numbers); a mismatch raises `error("<key>: expected <type in words>, got <value>")`."""
    origin = typing.get_origin(tp)

    def refuse() -> Exception:
        return error(f"{key}: expected {describe(tp)}, got {value!r}")

    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, error)
            except Exception:  # noqa: BLE001 - the union's other members may accept it
                pass
        raise refuse()
    if origin is typing.Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise refuse()
        return value
    if origin is list:
        if not isinstance(value, list):
            raise refuse()
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{key}.{i}", error) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise refuse()
        kt, vt = typing.get_args(tp)
        return {coerce(k, kt, key, error): coerce(v, vt, f"{key}.{k}", error) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise refuse() from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse()
        return float(value)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise refuse()
    if tp is type(None) and value is not None:
        raise refuse()
    if tp in (str, bool) and not isinstance(value, tp):
        raise refuse()
    return value


def check_fields(obj: Any) -> None:
    """Check every option of dataclass instance `obj` against its annotation, in place (a component's
    `__post_init__` calls it first, so one built in Python is checked like one built from a config);
    a mismatch is a ValueError `"<name> <option>: expected ..., got ..."`."""
    what = getattr(obj, "name", type(obj).__name__)
    for key, tp in option_hints(type(obj)).items():
        object.__setattr__(obj, key, coerce(getattr(obj, key), tp, f"{what} {key}", ValueError))
