"""TargetProfile: what a deployment target runs, as frozen data. Passes read it; none branches on a name."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Union

# A pipeline step: a pass name, or a tuple of names run as a fixed-point group.
Step = Union[str, tuple[str, ...]]


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    providers: tuple[str, ...]           # ORT execution providers, in preference order
    opset_range: tuple[int, int]         # opsets the runtime takes; passes' min_opset may upgrade
    pipeline: tuple[Step, ...]           # the passes compile() runs, in order
    pass_configs: Mapping[str, Mapping] = field(default_factory=lambda: MappingProxyType({}))
    # Passes run after quantization (precision of the float remainder, op-support report).
    finish: tuple[Step, ...] = ()
    # Ops (ai.onnx names, "domain:Op" for others) the runtime accelerates; empty = no restriction.
    allowed_ops: frozenset = frozenset()
    # ONNX Runtime settings the report recommends for running the compiled model.
    session_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    channel_multiple: int = 8            # pruned widths are kept multiples of this (kernel-friendly)
    # Quantization schemes to try, in preference order (passes.quant_spec). When the runtime is this
    # machine's (cpu), candidates are timed here and the fastest within budget wins; otherwise the
    # first within budget does.
    quant_schemes: tuple = ()
    quant_timed: bool = False
    # Output error (1 - cosine) the default pipeline may cost without quantization: 0 = lossless
    # (checked to verify_rtol); cuda's fp16 remainder is allowed 1e-3.
    stated_budget: float = 0.0
    verify_rtol: float = 1e-4            # lossless pipeline vs. the original, on seeded inputs
    verify_atol: float = 1e-5

    def as_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "providers": list(self.providers),
            "opset_range": list(self.opset_range),
            "pipeline": [list(s) if isinstance(s, tuple) else s for s in self.pipeline],
            "quant_schemes": [s.name for s in self.quant_schemes],
            "finish": [list(s) if isinstance(s, tuple) else s for s in self.finish],
            "allowed_ops": len(self.allowed_ops) or "any", "stated_budget": self.stated_budget,
        }


# Shared by all three targets until the quantization issue gives them their own schemes.
CLEANUP: tuple[Step, ...] = (
    ("fold_constants", "remove_identity", "eliminate_dead_nodes"),
    "fold_batchnorm",
    ("fold_redundant_pairs", "remove_identity", "fold_constants", "eliminate_dead_nodes"),
)
