"""TargetProfile: what a deployment target runs, as frozen data. Passes read it; none branches on a name.

The target's passes sit in named slots. compile() runs them in slot order and inserts its own
optional steps by slot name (hewn.driver.assemble), never by position:

    prepare -> cleanup -> [prune] -> fold -> lower -> [cleanup again] -> [plan] -> [sparsify] -> [quantize] -> finish
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Union

# A pipeline step: a pass name, or a tuple of names run as a fixed-point group.
Step = Union[str, tuple[str, ...]]

# Lossless simplification; run first and again after every structural change.
CLEANUP: tuple[Step, ...] = (("fold_constants", "remove_identity", "eliminate_dead_nodes"),)
# Folding that needs a clean graph and must come after pruning (BatchNorm scales rank channels).
FOLD: tuple[Step, ...] = (
    "fold_batchnorm",
    "fold_pad_into_conv",
    ("fold_redundant_pairs", "remove_identity", "fold_constants", "eliminate_dead_nodes"),
)
SLOTS = ("prepare", "cleanup", "fold", "lower", "finish", "decoder")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    providers: tuple[str, ...]           # ORT execution providers, in preference order
    opset_range: tuple[int, int]         # opsets the runtime takes; passes' min_opset may upgrade
    prepare: tuple[Step, ...] = ()       # before anything else (mobile: fix the input shapes)
    cleanup: tuple[Step, ...] = CLEANUP
    fold: tuple[Step, ...] = FOLD
    lower: tuple[Step, ...] = ()         # rewrites to the target's fused kernels
    finish: tuple[Step, ...] = ()        # after quantization (precision of the float remainder, op support)
    pass_configs: Mapping[str, Mapping] = field(default_factory=lambda: MappingProxyType({}))
    # Ops (ai.onnx names, "domain:Op" for others) the runtime accelerates; empty = no restriction.
    allowed_ops: frozenset = frozenset()
    # ONNX Runtime settings the report recommends for running the compiled model.
    session_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # torch models export with dynamic batch/sequence dims (mobile: static, so shapes fold away)
    dynamic_inputs: bool = True
    channel_multiple: int = 8            # pruned widths are kept multiples of this (kernel-friendly)
    # Quantization schemes to try, in preference order (hewn.passes.quant.spec). When the runtime is
    # this machine's (cpu), candidates are timed here and the fastest within budget wins; otherwise
    # the first within budget does.
    quant_schemes: tuple = ()
    quant_timed: bool = False
    # Causal LMs (a KV-cache graph with text calibration) run `decoder` (the target's decoder fusions),
    # then weight-only 4/8-bit compression under the perplexity budget, where `decoder_weights` is set.
    decoder: tuple[Step, ...] = ()
    decoder_weights: bool = False
    # Output error (1 - cosine) the default pipeline may cost without quantization: 0 = lossless
    # (checked to verify_rtol); cuda's fp16 remainder is allowed 1e-3.
    stated_budget: float = 0.0
    verify_rtol: float = 1e-4            # lossless pipeline vs. the original, on seeded inputs
    verify_atol: float = 1e-5

    @property
    def pipeline(self) -> tuple[Step, ...]:
        """The passes a plain compile() runs before quantization: prepare, cleanup, fold, lower."""
        return (*self.prepare, *self.cleanup, *self.fold, *self.lower)

    def slot(self, name: str) -> tuple[Step, ...]:
        if name not in SLOTS:
            raise KeyError(f"no pipeline slot {name!r}; slots: {', '.join(SLOTS)}")
        return getattr(self, name)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "providers": list(self.providers),
            "opset_range": list(self.opset_range), "dynamic_inputs": self.dynamic_inputs,
            "pipeline": _steps(self.pipeline),
            "slots": {name: _steps(self.slot(name)) for name in SLOTS},
            "quant_schemes": [s.name for s in self.quant_schemes],
            "finish": _steps(self.finish),
            "allowed_ops": len(self.allowed_ops) or "any", "stated_budget": self.stated_budget,
        }


def _steps(steps) -> list:
    return [list(s) if isinstance(s, tuple) else s for s in steps]
