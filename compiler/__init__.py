"""hewn: a graph-rewriting compiler that makes trained networks smaller and faster for ONNX Runtime.

    import hewn
    result = hewn.compile("model.onnx", target="cpu", output="model.opt.onnx")

The façade below is all a user needs: `compile`, its result `CompiledModel`, the configuration
classes, `distill`, `get_target` and the error family. Pass authors use `hewn.passes`.
Importing hewn is cheap: torch, onnxruntime and the passes load on first use of a name.
"""
from __future__ import annotations

import importlib

from .core.errors import (ConfigError, HewnError, HewnWarning, InputMismatchError, InvalidModelError, NotAvailableError,
                          PassError, RunTimeoutError, StageError, TraceError, UnsupportedModelError, VerificationError)

from .core.version import installed_version

__version__ = installed_version()

# name -> the module that defines it (imported on first access: PEP 562)
_LAZY = {
    "compile": "hewn.driver.compile",
    "CompiledModel": "hewn.driver.result",
    "PruneConfig": "hewn.passes.prune.prune_plan",
    "QuantizeConfig": "hewn.passes.quant.config",
    "PlanConfig": "hewn.passes.planner.planner",
    "SVDConfig": "hewn.passes.lowrank.factor",
    "DistillConfig": "hewn.passes.distill.config",
    "distill": "hewn.passes.distill.train",
    "get_target": "hewn.targets",
    "TargetProfile": "hewn.targets",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'hewn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["compile", "CompiledModel", "PruneConfig", "QuantizeConfig", "PlanConfig", "SVDConfig", "DistillConfig",
           "distill", "get_target", "TargetProfile", "HewnError", "InvalidModelError", "UnsupportedModelError",
           "TraceError", "InputMismatchError", "ConfigError", "NotAvailableError", "VerificationError", "PassError",
           "RunTimeoutError", "StageError", "HewnWarning"]
