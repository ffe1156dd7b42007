"""Turn pipeline steps (a target's slots, or a user's `passes=[...]`) into PassManager items."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from hewn.core.errors import ConfigError
from hewn.core.manager import FixedPoint, PipelineItem
from hewn.core.pass_infra import Pass


def make_pass(name: str, registry: Mapping[str, type[Pass]], overrides: Mapping[str, Any] | None = None) -> Pass:
    if name not in registry:
        raise ConfigError(f"unknown pass {name!r}; available passes: {', '.join(sorted(registry))}")
    cls = registry[name]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(overrides or {}) - fields)
    if unknown:
        raise ConfigError(f"pass {name!r} has no option(s) {unknown}; its options are {sorted(fields) or 'none'}")
    return cls(cls.Config(**dict(overrides or {})))


def build_pipeline(steps: Sequence, registry: Mapping[str, type[Pass]],
                   configs: Mapping[str, Mapping] | None = None) -> list[PipelineItem]:
    """Steps: a Pass instance, a pass name, a (name, {options}) pair, or a tuple/list of
    those run as a fixed-point group. `configs` gives options per pass name (a target's defaults)."""
    configs = configs or {}
    items: list[PipelineItem] = []
    for step in steps:
        if isinstance(step, (tuple, list)) and not _is_named_config(step):
            items.append(FixedPoint([_one(s, registry, configs) for s in step]))
        else:
            items.append(_one(step, registry, configs))
    return items


def flatten(pipeline: Sequence[PipelineItem]) -> list[Pass]:
    return [p for item in pipeline for p in (item.passes if isinstance(item, FixedPoint) else [item])]


def _is_named_config(step) -> bool:
    return len(step) == 2 and isinstance(step[0], str) and isinstance(step[1], Mapping)


def _one(step, registry, configs) -> Pass:
    if isinstance(step, Pass):
        return step
    if isinstance(step, str):
        return make_pass(step, registry, configs.get(step))
    if isinstance(step, (tuple, list)) and _is_named_config(step):
        return make_pass(step[0], registry, {**configs.get(step[0], {}), **step[1]})
    raise ConfigError(f"cannot use {step!r} as a pipeline step: give a pass name, (name, {{options}}) or a Pass")
