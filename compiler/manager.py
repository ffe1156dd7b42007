"""The pass manager: an explicit ordered pipeline, fixed-point groups, instruments, error wrapping."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import onnx_graphsurgeon as gs

from .errors import PassError
from .pass_infra import Context, Pass, PassResult


@dataclass
class FixedPoint:
    """Run `passes` in order, repeatedly, until a whole round modifies nothing."""

    passes: Sequence[Pass]
    max_rounds: int = 8
    name: str = "fixed_point"


PipelineItem = Union[Pass, FixedPoint]


@dataclass
class PassRecord:
    name: str
    modified: bool
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    lossless: bool = True

    def as_dict(self) -> dict:
        return {"pass": self.name, "modified": self.modified, "seconds": round(self.seconds, 4),
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "stats": self.stats}


class Instrument:
    """Hooks around every pass run (MLIR PassInstrumentation): override what you need."""

    def before(self, pass_: Pass, graph: gs.Graph, ctx: Context) -> None:
        pass

    def after(self, pass_: Pass, graph: gs.Graph, ctx: Context, result: PassResult) -> None:
        pass

    def failed(self, pass_: Pass, graph: gs.Graph, ctx: Context, error: BaseException) -> None:
        pass


class PassManager:
    def __init__(self, pipeline: Sequence[PipelineItem], instruments: Sequence[Instrument] = ()):
        self.pipeline = list(pipeline)
        self.instruments = list(instruments)

    def run(self, graph: gs.Graph, ctx: Context) -> list[PassRecord]:
        records: list[PassRecord] = []
        for item in self.pipeline:
            if isinstance(item, FixedPoint):
                self._run_fixed_point(item, graph, ctx, records)
            else:
                self._run_one(item, graph, ctx, records)
        return records

    def _run_fixed_point(self, group: FixedPoint, graph, ctx, records) -> None:
        for _ in range(group.max_rounds):
            if not any([self._run_one(p, graph, ctx, records).modified for p in group.passes]):
                return

    def _run_one(self, pass_: Pass, graph: gs.Graph, ctx: Context, records: list[PassRecord]) -> PassResult:
        import time

        before = [r.name for r in records]
        nodes_before = len(graph.nodes)
        start = time.perf_counter()
        try:
            for inst in self.instruments:
                inst.before(pass_, graph, ctx)
            result = pass_.run(graph, ctx)
            if result.modified:
                ctx.invalidate(pass_.preserves)
            for inst in self.instruments:
                inst.after(pass_, graph, ctx, result)
        except (KeyboardInterrupt, PassError):
            raise
        except Exception as exc:
            for inst in self.instruments:
                inst.failed(pass_, graph, ctx, exc)
            raise PassError(pass_.name, before, exc) from exc
        records.append(PassRecord(pass_.name, result.modified, dict(result.stats),
                                  time.perf_counter() - start, nodes_before, len(graph.nodes), pass_.lossless))
        return result
