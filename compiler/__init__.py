"""hewn: a graph-rewriting compiler that makes trained networks smaller and faster for ONNX Runtime.

    from compiler import compile
    result = compile("model.onnx", target="cpu", output="model.opt.onnx")
"""
from .compile import CompiledModel, compile
from .errors import (ConfigError, HewnError, InputMismatchError, InvalidModelError, NotAvailableError, PassError,
                     TraceError, UnsupportedModelError, VerificationError)
from .manager import FixedPoint, Instrument, PassManager
from .pass_infra import Analysis, Context, Pass, PassResult, Reference

__all__ = ["compile", "CompiledModel", "HewnError", "InvalidModelError", "UnsupportedModelError", "TraceError",
           "InputMismatchError", "ConfigError", "NotAvailableError", "VerificationError", "PassError",
           "Pass", "PassResult", "Analysis", "Context", "Reference", "PassManager", "FixedPoint", "Instrument"]
