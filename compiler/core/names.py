"""The one `exclude=` rule every pass uses.

A pattern matches a node, module or layer name when it is the whole name, or a shell-style glob
that matches the whole name (`*` any run of characters, `?` one, `[...]` a set), case-sensitive:
`"Conv_0"`, `"/encoder/layer.0/*"`, `"*attention*"`.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable


def matches(name: str, patterns: Iterable[str]) -> bool:
    name = name or ""
    return any(pattern == name or fnmatchcase(name, pattern) for pattern in patterns)
