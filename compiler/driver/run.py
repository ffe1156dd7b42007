"""Running the ONNX pipeline: the context, the instruments, the pass manager, and emitting the model."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import onnx

from hewn.core.errors import InputMismatchError, RunTimeoutError
from hewn.core.instruments import DumpIR, Provenance, Timing, Verify
from hewn.core.ir import keep_interface, to_graph, to_model
from hewn.core.kv_cache import TokenWindows
from hewn.core.manager import PassManager, PassRecord
from hewn.core.pass_infra import Context, Reference
from hewn.core.runtime import input_specs, make_session, run_all
from hewn.core.measure import compare, output_error
from hewn.core.sparse_storage import store_sparse
from hewn.driver.assemble import needed_opset
from hewn.frontends.from_onnx import fit_opset
from hewn.passes import CostModel
from hewn.passes.quant.calibrate import CalibrationData


@dataclass
class OnnxRun:
    model: onnx.ModelProto          # the emitted model
    records: list[PassRecord]
    seconds: dict                   # per pass name, summed over fixed-point rounds
    ctx: Context
    before: dict                    # CostModel summaries
    after: dict
    lossy: list[str]                # what changed the outputs on purpose
    storage: Optional[dict] = None  # sparse initializers, when that was smaller


def calibration(calib_data, model: onnx.ModelProto, held_out: frozenset = frozenset()):
    """calib_data as passes read it: less the samples verification holds out (reference.held_out)."""
    if calib_data is None or isinstance(calib_data, TokenWindows):   # a causal LM's token windows as they are
        return calib_data
    return CalibrationData(calib_data, input_specs(model), skip=held_out)


class OutputGuard:
    """Checks each lossy pass right after it ran (PassManager's guard): outputs that became NaN/Inf
    where the original's are finite, or an error over the pass's own budget (against the outputs
    before it), roll the pass back. What it accepts is measured into ctx.measurements."""

    def __init__(self, start=None):
        self.current = start  # the outputs before the next lossy pass; None: the original's

    def __call__(self, pass_, graph, ctx: Context) -> Optional[str]:
        if ctx.reference is None:
            return None
        # unoptimized: ORT's CPU graph optimizations fuse fp16 Cast pairs away and compute in fp32,
        # hiding the rounding and overflow an fp16 runtime (cuda) has; kept, every cast rounds
        model = to_model(graph, ir_version=ctx.ir_version)   # export reads the graph: no copy (2 s at 32k nodes)
        outputs = run_all(make_session(model, optimize=False), ctx.reference.feeds)
        total = ctx.reference.error(outputs)
        if total.get("shape_mismatch"):
            return "it changed the shape of an output"
        if total.get("nonfinite"):
            return (f"{total['nonfinite']} output value(s) became NaN/Inf where the original's are finite "
                    f"(on the verification inputs)")
        budget = pass_.budget(ctx)
        # what this pass added: against the outputs before it (the original's, before any lossy pass)
        own = total["error"] if self.current is None else output_error(self.current, outputs, ctx.reference.classes)["error"]
        if budget is not None and own > budget:
            return f"it cost output error {own:.3g}, over its budget {budget:g} (target '{ctx.target.name}')"
        ctx.measurements.append({"pass": pass_.name, "own_error": own, **total})
        self.current = outputs
        return None

    def lossless(self, graph, ctx: Context) -> Optional[str]:
        """The PassManager's check of lossless passes: the outputs must be those before them (the
        original's, or the last accepted lossy pass's) to the target's tolerance."""
        if ctx.reference is None:
            return None
        model = to_model(graph, ir_version=ctx.ir_version)   # export reads the graph: no copy (2 s at 32k nodes)
        try:
            outputs = run_all(make_session(model, optimize=False), ctx.reference.feeds)
        except (InputMismatchError, RunTimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - ORT refuses what a lossless rewrite made: roll it back
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"it made a model ONNX Runtime cannot run on the reference inputs ({first[:300]})"
        expected = ctx.reference.outputs if self.current is None else self.current
        cmp = compare(expected, outputs, rtol=ctx.target.verify_rtol, atol=ctx.target.verify_atol)
        if cmp.passed:
            return None
        return (f"it changed the outputs of a lossless rewrite (max abs error {cmp.max_abs:.3g}, max rel error "
                f"{cmp.max_rel:.3g} > rtol {ctx.target.verify_rtol})")


def run_passes(graph, ctx: Context, pipeline, profile, start=None, on_error: str = "raise"):
    """(records, Timing). Lossy passes are guarded (OutputGuard). Tests set HEWN_VERIFY_EACH_PASS=1:
    every lossless pass is checked against the outputs before it; HEWN_DUMP_DIR writes the graph
    after every modifying pass."""
    timing = Timing()
    instruments = [timing, Provenance()]
    if os.environ.get("HEWN_VERIFY_EACH_PASS") == "1":
        verify = Verify(profile.verify_rtol, profile.verify_atol)
        verify.current = start
        instruments.append(verify)
    if os.environ.get("HEWN_DUMP_DIR"):
        instruments.append(DumpIR(os.environ["HEWN_DUMP_DIR"]))
    guard = OutputGuard(start)
    manager = PassManager(pipeline, instruments, on_error=on_error, guard=guard, check=guard.lossless)
    return manager.run(graph, ctx), timing


def cost_summary(graph, ctx) -> dict:
    """Parameters and MACs of `graph` (which this changes), counted as the compiled model is: where
    shape inference cannot know a MAC node's output (a torch export's computed Pad widths), after
    constant folding, as the pipeline's own cleanup does (EfficientNet-Lite0 counted 3.3M MACs
    before and 384M after, from unknown spatial dims counted as 1)."""
    cost = ctx.analysis(CostModel, graph)
    summary = cost.summary()
    if cost.unknown_shapes:   # nodes and ops stay the file's own
        from hewn.passes.cleanup.constant_folding import FoldConstants

        FoldConstants().run(graph, ctx)
        ctx.invalidate(graph=graph)
        folded = ctx.analysis(CostModel, graph).summary()
        summary.update({k: folded[k] for k in ("params", "param_bytes", "macs", "activation_bytes")},
                       counted_after_folding=True)
    return summary


def run_onnx(original: onnx.ModelProto, working: onnx.ModelProto, pipeline, profile, reference: Reference, *,
             info: dict, calib_data=None, torch_changed: bool = False, sparse_storage: bool = False,
             on_error: str = "raise") -> OnnxRun:
    """Fit the opset, run `pipeline` on `working` (the original, or the torch side's export of it),
    and emit. `torch_changed`: the torch side already changed the outputs, so later passes are
    checked against the working model's outputs and the change is measured. `sparse_storage`:
    store zeroed weights as sparse initializers where that is smaller (unstructured sparsity)."""
    working = fit_opset(working, profile, info, needed_opset(pipeline), reference.feeds)
    ctx = Context(profile, seed=0, reference=reference, ir_version=max(working.ir_version, 7),
                  calibration=calibration(calib_data, original, reference.held_out))
    original_graph = to_graph(original)
    before = cost_summary(original_graph, ctx)
    ctx.invalidate(graph=original_graph)  # frees the original's weights
    del original_graph
    graph = to_graph(working)
    start = None
    if torch_changed:
        start = run_all(make_session(working), reference.feeds)
        ctx.measurements.append({"pass": "torch_structure", **reference.error(start)})
    records, timing = run_passes(graph, ctx, pipeline, profile, start, on_error)
    graph.cleanup().toposort()
    emitted = keep_interface(to_model(graph, ir_version=ctx.ir_version, provenance=ctx.provenance), original)
    ctx.invalidate(graph=graph)
    after = ctx.analysis(CostModel, graph).summary()
    storage = None
    if sparse_storage:
        emitted, storage = store_sparse(emitted)
    lossy = (["torch_structure"] if torch_changed else []) + \
        [r.name for r in records if r.modified and not r.lossless and not r.error]
    return OnnxRun(emitted, records, timing.seconds, ctx, before, after, lossy, storage)
