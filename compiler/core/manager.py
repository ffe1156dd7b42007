"""The pass manager: an explicit ordered pipeline, fixed-point groups, instruments, error wrapping.

It computes each pass's `requires` before the pass and drops, after a modifying pass, every
cached analysis of the graph the pass does not `preserve`. With a `guard`, every lossy pass that
modified the graph is checked right after it runs (the driver's guard measures the outputs: NaN/Inf
where the original has none, or an error over the pass's stated budget) and rolled back when the
guard gives a reason; the record and the report say why. Passes that choose among options under a
budget (Quantize, PlanStructure) also measure and back off inside.

With a `check`, lossless passes are verified too, cheaply: once per run of consecutive lossless
items (before the next lossy pass, and at the end), on the reference outputs already computed.
When such a run fails its check, it is replayed item by item with a check after each modifying
one, and the items that break the outputs are rolled back with the reason; the rest go on."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import onnx_graphsurgeon as gs

from hewn.core.errors import InputMismatchError, PassError, RunTimeoutError
from hewn.core.pass_infra import Context, Pass, PassResult
from hewn.core.progress import step


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
    error: str = ""        # on_error="skip": why this pass was skipped (its changes were undone)
    rolled_back: str = ""  # why the guard undid this lossy pass

    def as_dict(self) -> dict:
        out = {"pass": self.name, "modified": self.modified, "seconds": round(self.seconds, 4),
               "nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "stats": self.stats}
        if self.error:
            out["skipped"] = self.error
        if self.rolled_back:
            out["rolled_back"] = self.rolled_back
        return out


class Instrument:
    """Hooks around every pass run (MLIR PassInstrumentation): override what you need."""

    def before(self, pass_: Pass, graph: gs.Graph, ctx: Context) -> None:
        pass

    def after(self, pass_: Pass, graph: gs.Graph, ctx: Context, result: PassResult) -> None:
        pass

    def failed(self, pass_: Pass, graph: gs.Graph, ctx: Context, error: BaseException) -> None:
        pass


class PassManager:
    """on_error="raise": a failing pass stops the pipeline with a PassError. "skip": the graph is
    restored to its state before that pass (a snapshot is kept while each pass runs: one more
    set of node objects, weights shared), the failure is recorded, and the pipeline goes on.
    KeyboardInterrupt always stops. `guard(pass_, graph, ctx) -> reason or None` checks each lossy
    pass that modified the graph (see the module docstring)."""

    def __init__(self, pipeline: Sequence[PipelineItem], instruments: Sequence[Instrument] = (),
                 on_error: str = "raise", guard: Optional[Callable[[Pass, gs.Graph, Context], Optional[str]]] = None,
                 check: Optional[Callable[[gs.Graph, Context], Optional[str]]] = None):
        self.pipeline = list(pipeline)
        self.instruments = list(instruments)
        self.on_error = on_error
        self.guard = guard
        self.check = check
        self._failed: set[int] = set()  # passes skipped once are not retried in later rounds

    def run(self, graph: gs.Graph, ctx: Context) -> list[PassRecord]:
        records: list[PassRecord] = []
        segment: list[PipelineItem] = []   # consecutive lossless items since the last check
        start = None
        for item in self.pipeline:
            if self.check is not None and _lossless(item):
                if not segment:
                    start = _Snapshot(graph, ctx), len(records)
                segment.append(item)
                self._run_item(item, graph, ctx, records)
                continue
            self._check_segment(segment, start, graph, ctx, records)
            segment = []
            self._run_item(item, graph, ctx, records)
        self._check_segment(segment, start, graph, ctx, records)
        return records

    def _run_item(self, item: PipelineItem, graph, ctx, records) -> bool:
        count = len(records)
        if isinstance(item, FixedPoint):
            self._run_fixed_point(item, graph, ctx, records)
        else:
            self._run_one(item, graph, ctx, records)
        return any(r.modified for r in records[count:])

    def _check_segment(self, segment, start, graph, ctx, records) -> None:
        """Check a run of lossless items once; when it fails, replay it item by item with a check
        after each modifying one, rolling back those that break the outputs."""
        if not segment or not any(r.modified for r in records[start[1]:]):
            return
        why = self.check(graph, ctx)
        if not why:
            return
        snapshot, count = start
        snapshot.restore(graph, ctx)
        del records[count:]
        self._failed.clear()
        for item in segment:
            before, first = _Snapshot(graph, ctx), len(records)
            if not self._run_item(item, graph, ctx, records):
                continue
            why = self.check(graph, ctx)
            if why:
                before.restore(graph, ctx)
                for record in records[first:]:
                    record.modified, record.rolled_back = False, why
                names = sorted({r.name for r in records[first:]})
                ctx.note(", ".join(names), "model", f"rolled back: {why}; the model is kept as it was before it")

    def _run_fixed_point(self, group: FixedPoint, graph, ctx, records) -> None:
        for _ in range(group.max_rounds):
            if not any([self._run_one(p, graph, ctx, records).modified for p in group.passes]):
                return

    def _run_one(self, pass_: Pass, graph: gs.Graph, ctx: Context, records: list[PassRecord]) -> PassResult:
        if id(pass_) in self._failed:
            return PassResult(False, {})
        before = [r.name for r in records if not r.error]
        nodes_before = len(graph.nodes)
        start = time.perf_counter()
        guarded = self.guard is not None and not pass_.lossless
        snapshot = _Snapshot(graph, ctx) if self.on_error == "skip" or guarded else None
        try:
            for kind in pass_.requires:  # computed (or taken from the cache) before the pass runs
                ctx.analysis(kind, graph)
            for inst in self.instruments:
                inst.before(pass_, graph, ctx)
            with step(f"pass {pass_.name}"):
                result = pass_.run(graph, ctx)
            if result.modified:
                ctx.invalidate(pass_.preserves, graph)
            why = self.guard(pass_, graph, ctx) if guarded and result.modified else None
            if why:
                return self._roll_back(pass_, graph, ctx, snapshot, records, result, why, start, nodes_before)
            for inst in self.instruments:
                inst.after(pass_, graph, ctx, result)
        except (KeyboardInterrupt, PassError, InputMismatchError, RunTimeoutError):
            raise  # the user's data or model is the problem, not the pass: its own message is the right one
        except Exception as exc:
            for inst in self.instruments:
                inst.failed(pass_, graph, ctx, exc)
            if snapshot is None:
                raise PassError(pass_.name, before, exc) from exc
            snapshot.restore(graph, ctx)
            self._failed.add(id(pass_))
            error = f"{type(exc).__name__}: {exc}"
            records.append(PassRecord(pass_.name, False, {}, time.perf_counter() - start, nodes_before,
                                      len(graph.nodes), pass_.lossless, error=error))
            ctx.note(pass_.name, "pipeline", f"pass failed and was skipped (on_error='skip'); its changes were "
                                             f"undone: {error}")
            return PassResult(False, {})
        records.append(PassRecord(pass_.name, result.modified, dict(result.stats),
                                  time.perf_counter() - start, nodes_before, len(graph.nodes), pass_.lossless))
        return result

    def _roll_back(self, pass_, graph, ctx, snapshot, records, result, why, start, nodes_before) -> PassResult:
        snapshot.restore(graph, ctx)
        records.append(PassRecord(pass_.name, False, dict(result.stats), time.perf_counter() - start, nodes_before,
                                  len(graph.nodes), pass_.lossless, rolled_back=why))
        ctx.note(pass_.name, "model", f"rolled back: {why}; the model is kept as it was before this pass")
        return PassResult(False, {})


def _lossless(item: PipelineItem) -> bool:
    passes = item.passes if isinstance(item, FixedPoint) else [item]
    return all(p.lossless for p in passes)


class _Snapshot:
    """The graph and the context's logs as they were before a pass, to undo a failed one."""

    def __init__(self, graph: gs.Graph, ctx: Context):
        self.graph = graph.copy()
        self.notes, self.measurements = len(ctx.notes), len(ctx.measurements)

    def restore(self, graph: gs.Graph, ctx: Context) -> None:
        graph.__dict__.clear()
        graph.__dict__.update(self.graph.__dict__)  # in place: callers hold this Graph object
        del ctx.notes[self.notes:]
        del ctx.measurements[self.measurements:]
        ctx.invalidate()
