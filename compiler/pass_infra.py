"""Passes, analyses and the context they share (DESIGN.md "Passes").

A pass edits an onnx-graphsurgeon Graph in place and returns PassResult(modified, stats).
An analysis is computed on demand through ctx.analysis(T), cached by type, and dropped by the
manager after a modifying pass unless that pass lists it in `preserves`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, TypeVar

import numpy as np
import onnx_graphsurgeon as gs

A = TypeVar("A", bound="Analysis")


@dataclass(frozen=True)
class PassResult:
    modified: bool
    stats: dict = field(default_factory=dict)


class Analysis:
    """Base of typed analyses: subclasses implement `compute(graph, ctx)`."""

    @classmethod
    def compute(cls: type[A], graph: gs.Graph, ctx: "Context") -> A:  # pragma: no cover - interface
        raise NotImplementedError


class Pass:
    """Base of rewrite passes. Subclasses set `name`, a frozen dataclass `Config` and `run`."""

    name: ClassVar[str]
    requires: ClassVar[tuple[type[Analysis], ...]] = ()
    preserves: ClassVar[tuple[type[Analysis], ...]] = ()
    lossless: ClassVar[bool] = True
    min_opset: ClassVar[int] = 9  # compile() upgrades the model when a pass needs a newer opset

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Optional[Any] = None):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {type(self).__name__}.Config, got {type(config).__name__}")

    def run(self, graph: gs.Graph, ctx: "Context") -> PassResult:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{type(self).__name__}({fields})"


class Names:
    """Deterministic names `{pass}/{anchor}/{role}_{n}`: one counter per graph, never random."""

    def __init__(self):
        self._counts: dict[str, int] = {}

    def make(self, pass_name: str, anchor: str, role: str) -> str:
        key = f"{pass_name}/{anchor}/{role}"
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        return f"{key}_{n}"


@dataclass
class Reference:
    """Seeded inputs and the original model's outputs on them: what every pass is checked against."""

    feeds: list[dict[str, np.ndarray]]
    outputs: list[list[np.ndarray]]


class Context:
    """What passes share: the target, the seed, the analysis cache, the reference data, names."""

    def __init__(self, target=None, *, seed: int = 0, reference: Optional[Reference] = None, ir_version: int = 8,
                 calibration=None):
        if target is None or isinstance(target, str):
            from targets import get_target

            target = get_target(target or "cpu")
        self.target = target
        self.seed = seed
        self.reference = reference
        self.calibration = calibration  # passes.calibrate.CalibrationData, or None
        self.ir_version = ir_version
        self.names = Names()
        self.provenance: dict[str, str] = {}
        self.notes: list[dict] = []  # things a pass left intact, with the reason (go into the report)
        self.measurements: list[dict] = []  # output error after each lossy pass (Verify instrument)
        self._analyses: dict[type, Any] = {}

    def analysis(self, kind: type[A], graph: gs.Graph) -> A:
        if kind not in self._analyses:
            self._analyses[kind] = kind.compute(graph, self)
        return self._analyses[kind]

    def invalidate(self, preserved: tuple[type, ...] = ()) -> None:
        self._analyses = {k: v for k, v in self._analyses.items() if k in preserved}

    def note(self, pass_name: str, where: str, why: str) -> None:
        self.notes.append({"pass": pass_name, "where": where, "why": why})
