"""Target profiles: `get_target("cpu" | "cuda" | "mobile")`."""
from __future__ import annotations

from hewn.core.errors import ConfigError

from hewn.targets.cpu import CPU
from hewn.targets.cuda import CUDA
from hewn.targets.mobile import MOBILE
from hewn.targets.profile import TargetProfile

TARGETS: dict[str, TargetProfile] = {t.name: t for t in (CPU, CUDA, MOBILE)}


def get_target(target) -> TargetProfile:
    if isinstance(target, TargetProfile):
        return target
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    return TARGETS[target]


__all__ = ["TargetProfile", "TARGETS", "get_target", "CPU", "CUDA", "MOBILE"]
