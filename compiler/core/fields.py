"""Type checks for config dataclasses: a field given the wrong kind of value (a string budget, a
bool where a count goes, a list where names go) is a ConfigError naming the field, at construction,
not a TypeError deep in a pass or a silently different behaviour."""
from __future__ import annotations

import dataclasses
import types
import typing

from hewn.core.errors import ConfigError

_KINDS = {bool: "a bool", int: "an int", float: "a number", str: "a string", tuple: "a tuple"}


def _accepts(hint, value) -> bool:
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):   # Optional[X], X | None, X | Y
        args = typing.get_args(hint)
        return type(None) in args if value is None else any(_accepts(a, value) for a in args if a is not type(None))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is tuple or origin is tuple:
        return isinstance(value, tuple)
    return True   # callables, sequences of objects, nested configs: their own checks


def check_fields(config) -> None:
    """Raise ConfigError for the first field whose value is not of its annotated kind. A list given
    for a tuple field is taken as the tuple (frozen dataclasses cannot hash a list)."""
    hints = typing.get_type_hints(type(config))
    name = type(config).__name__
    for f in dataclasses.fields(config):
        hint, value = hints.get(f.name, typing.Any), getattr(config, f.name)
        wants_tuple = hint is tuple or typing.get_origin(hint) is tuple or any(
            a is tuple or typing.get_origin(a) is tuple for a in typing.get_args(hint))
        if wants_tuple and isinstance(value, list):
            object.__setattr__(config, f.name, tuple(value))
            continue
        if not _accepts(hint, value):
            options = typing.get_args(hint) if typing.get_origin(hint) is not tuple else ()
            kinds = [_KINDS.get(typing.get_origin(a) or a, getattr(a, "__name__", str(a)))
                     for a in (options or (hint,)) if a is not type(None)]
            optional = " or None" if type(None) in typing.get_args(hint) else ""
            raise ConfigError(f"{name}.{f.name} must be {' or '.join(kinds)}{optional}, got {value!r} "
                              f"({type(value).__name__})")


__all__ = ["check_fields"]
