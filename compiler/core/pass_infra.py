"""Passes, analyses and the context they share (DESIGN.md "Passes").

A pass edits an onnx-graphsurgeon Graph in place and returns PassResult(modified, stats, artifact).
An analysis is computed on demand through ctx.analysis(T, graph), cached per (kind, graph), and
dropped by the manager after a modifying pass unless that pass lists it in `preserves`. The
manager computes a pass's `requires` before running it. A pass's Config validates itself when it
is constructed (ConfigError), so a bad option fails before any work is done.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, TypeVar

import numpy as np
import onnx_graphsurgeon as gs

A = TypeVar("A", bound="Analysis")


@dataclass(frozen=True)
class PassResult:
    modified: bool
    stats: dict = field(default_factory=dict)   # what the report shows
    artifact: Any = None                        # what the pass built that a caller may reuse (e.g. a QuantPlan)


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

    def budget(self, ctx: "Context") -> Optional[float]:
        """A lossy pass's own allowed output error (what it may add to the outputs before it), checked
        by the manager's guard; None: only NaN/Inf are checked (the pass keeps its own budget, or the
        user asked for exactly this change)."""
        return None

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
    classes: dict = field(default_factory=dict)   # output index -> why it is class scores (top-1 judges it)
    held_out: frozenset = frozenset()             # calib_data positions of `feeds`: calibration skips them
    task: Optional[Callable] = None               # task(reference_outputs, outputs) -> score, 1 = the original's
    task_name: str = ""                           # what the score is ("box F1", "metric=")

    def error(self, outputs: list) -> dict:
        """output_error of `outputs` (on `feeds`) against the original's, top-1 on the class outputs,
        and `task_score` in the task's own metric when one is set (metric="boxes", a function)."""
        from hewn.core.measure import output_error

        err = output_error(self.outputs, outputs, self.classes)
        if self.task is not None and not err.get("shape_mismatch"):
            err["task_score"] = float(self.task(self.outputs, outputs))
        return err


class Context:
    """What passes share: the target (a hewn.targets.TargetProfile), the seed, the analysis
    cache, the reference data, deterministic names, and the notes and measurements for the report."""

    def __init__(self, target, *, seed: int = 0, reference: Optional[Reference] = None, ir_version: int = 8,
                 calibration=None):
        self.target = target
        self.seed = seed
        self.reference = reference
        self.calibration = calibration  # hewn.passes.quant.calibrate.CalibrationData, or None
        self.ir_version = ir_version
        self.names = Names()
        self.provenance: dict[str, str] = {}
        self.notes: list[dict] = []  # things a pass left intact, with the reason (go into the report)
        self.measurements: list[dict] = []  # output error after each lossy pass (Verify instrument)
        # (kind, id(graph)) -> (graph, value): the graph is held so that its id cannot be reused
        self._analyses: dict[tuple[type, int], tuple[gs.Graph, Any]] = {}

    def analysis(self, kind: type[A], graph: gs.Graph) -> A:
        key = (kind, id(graph))
        if key not in self._analyses:
            self._analyses[key] = (graph, kind.compute(graph, self))
        return self._analyses[key][1]

    def provide(self, kind: type[A], graph: gs.Graph, value: A) -> None:
        """Seed the cache (e.g. calibration histograms measured on another graph with the same tensors)."""
        self._analyses[(kind, id(graph))] = (graph, value)

    def invalidate(self, preserved: tuple[type, ...] = (), graph: Optional[gs.Graph] = None) -> None:
        """Drop cached analyses (of `graph` only, when given) except the `preserved` kinds."""
        self._analyses = {k: v for k, v in self._analyses.items()
                          if k[0] in preserved or (graph is not None and v[0] is not graph)}

    def note(self, pass_name: str, where: str, why: str) -> None:
        self.notes.append({"pass": pass_name, "where": where, "why": why})
