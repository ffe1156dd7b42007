
import numpy as np
import onnx_graphsurgeon as gs
import pytest

from hewn.passes import Context, FixedPoint, PassManager, PassResult, Reference
from hewn.core.errors import PassError, VerificationError
from hewn.core.instruments import DumpIR, Provenance, Timing, Verify
from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Analysis, Pass
from hewn.passes import build_pipeline
from hewn.core.runtime import input_specs, seeded_inputs
from hewn.passes import FoldBatchNorm, RemoveIdentity, ShapeInfo
from hewn.targets import CPU
from tests.helpers import IDENTITY_CHAIN, ort_outputs, parse

MODEL = IDENTITY_CHAIN


class Counter(Analysis):
    computed = 0

    @classmethod
    def compute(cls, graph, ctx):
        cls.computed += 1
        return cls()


class NegateRelu(Pass):
    """A planted bug: turns Relu into Neg (changes outputs)."""
    name = "negate_relu"

    def run(self, graph, ctx):
        hit = [n for n in graph.nodes if n.op == "Relu"]
        for n in hit:
            n.op = "Neg"
        return PassResult(bool(hit))


class Boom(Pass):
    name = "boom"

    def run(self, graph, ctx):
        raise ValueError("kaboom")


class AddExp(Pass):
    name = "add_exp"

    def run(self, graph, ctx):
        out = graph.outputs[0]
        new = gs.Variable("exp_in", dtype=np.float32)
        out.inputs[0].outputs[0] = new
        graph.nodes.append(gs.Node("Exp", inputs=[new], outputs=[out]))
        return PassResult(True)


def _setup():
    model = parse(MODEL)
    feeds = seeded_inputs(input_specs(model), 2, 0)
    ctx = Context(CPU, reference=Reference(feeds, ort_outputs(model, feeds)))
    return model, to_graph(model), ctx


def test_fixed_point_group_runs_until_nothing_changes():
    _, graph, ctx = _setup()
    records = PassManager([FixedPoint([RemoveIdentity()])]).run(graph, ctx)
    assert [r.modified for r in records] == [True, False]
    assert [n.op for n in graph.nodes] == ["Relu", "Sigmoid"]


def test_pass_error_names_the_passes_before():
    _, graph, ctx = _setup()
    with pytest.raises(PassError, match=r"pass 'boom' failed \(after \[remove_identity\]\).*kaboom"):
        PassManager([RemoveIdentity(), Boom()]).run(graph, ctx)


def test_verify_instrument_catches_a_pass_that_changes_outputs():
    _, graph, ctx = _setup()
    with pytest.raises(PassError) as info:
        PassManager([NegateRelu()], [Verify()]).run(graph, ctx)
    assert isinstance(info.value.cause, VerificationError)
    assert "negate_relu" in str(info.value)


def test_analyses_are_cached_and_dropped_unless_preserved():
    _, graph, ctx = _setup()
    Counter.computed = 0
    ctx.analysis(Counter, graph)
    ctx.analysis(Counter, graph)
    assert Counter.computed == 1
    PassManager([RemoveIdentity()]).run(graph, ctx)  # modifies, preserves nothing
    ctx.analysis(Counter, graph)
    assert Counter.computed == 2

    class KeepsCounter(RemoveIdentity):
        preserves = (Counter,)

    _, graph2, ctx2 = _setup()
    ctx2.analysis(Counter, graph2)
    PassManager([KeepsCounter()]).run(graph2, ctx2)
    ctx2.analysis(Counter, graph2)
    assert Counter.computed == 3


class NeedsCounter(Pass):
    name = "needs_counter"
    requires = (Counter,)
    cached_at_start = False

    def run(self, graph, ctx):
        NeedsCounter.cached_at_start = (Counter, id(graph)) in ctx._analyses
        return PassResult(False, {})


def test_manager_computes_requires_before_the_pass():
    Counter.computed = 0
    graph, ctx = to_graph(parse(MODEL)), Context(CPU)
    PassManager([NeedsCounter()]).run(graph, ctx)
    assert NeedsCounter.cached_at_start and Counter.computed == 1


def test_analyses_are_cached_per_graph():
    ctx = Context(CPU)
    a, b = to_graph(parse(MODEL)), to_graph(parse(MODEL))
    assert ctx.analysis(ShapeInfo, a) is ctx.analysis(ShapeInfo, a)
    assert ctx.analysis(ShapeInfo, a) is not ctx.analysis(ShapeInfo, b)
    kept = ctx.analysis(ShapeInfo, b)
    ctx.invalidate(graph=a)                      # drops a's analyses only
    assert ctx.analysis(ShapeInfo, b) is kept


def test_provenance_names_and_stamps_created_nodes(tmp_path):
    _, graph, ctx = _setup()
    timing = Timing()
    PassManager([AddExp()], [Provenance(), timing, DumpIR(tmp_path)]).run(graph, ctx)
    exp = [n for n in graph.nodes if n.op == "Exp"][0]
    assert exp.name == "add_exp/y/Exp_0"
    model = to_model(graph, ir_version=8, provenance=ctx.provenance)
    stamped = {n.op_type: {p.key: p.value for p in n.metadata_props} for n in model.graph.node}
    assert stamped["Exp"] == {"hewn.pass": "add_exp"} and stamped["Relu"] == {}
    assert (tmp_path / "01_add_exp.onnx").exists() and "add_exp" in timing.seconds


def test_pipeline_from_names_and_options():
    items = build_pipeline(["fold_batchnorm", ("fold_constants", {"max_growth_bytes": 1}),
                            ("remove_identity", "eliminate_dead_nodes")])
    assert isinstance(items[0], FoldBatchNorm)
    assert items[1].config.max_growth_bytes == 1
    assert isinstance(items[2], FixedPoint) and len(items[2].passes) == 2


def test_config_is_frozen_and_typed():
    from hewn.passes import FoldConstants

    cfg = FoldConstants.Config(max_growth_bytes=5)
    with pytest.raises(Exception):
        cfg.max_growth_bytes = 6
    with pytest.raises(TypeError):
        FoldConstants(FoldBatchNorm.Config())


def test_shape_info_analysis():
    model, graph, ctx = _setup()
    info = ctx.analysis(ShapeInfo, graph)
    assert info.shape("b") == (2, 4) and info.dtype("b") == np.float32


def test_compare_is_relative_to_the_tensor_scale_and_strict_on_non_finite():
    from hewn.core.measure import compare

    ref = [[np.array([400.0, 0.01], np.float32)]]
    assert compare(ref, [[np.array([400.0, 0.0101], np.float32)]], rtol=1e-4, atol=1e-5).passed
    assert not compare(ref, [[np.array([400.1, 0.01], np.float32)]], rtol=1e-4, atol=1e-5).passed
    assert not compare([[np.array([np.nan])]], [[np.array([1.0])]], rtol=1e-4, atol=1e-5).passed
    assert not compare([[np.array([1, 2])]], [[np.array([1, 3])]], rtol=1e-4, atol=1e-5).passed
    assert not compare([[np.ones(3)]], [[np.ones(4)]], rtol=1e-4, atol=1e-5).passed


def _checker():
    from hewn.driver.run import OutputGuard

    guard, calls = OutputGuard(), []

    def check(graph, ctx):
        calls.append(1)
        return guard.lossless(graph, ctx)
    return check, calls


def test_lossless_passes_are_checked_once_per_run_and_a_breaking_one_is_rolled_back():
    _, graph, ctx = _setup()
    assert any(n.op == "Relu" for n in graph.nodes)
    check, calls = _checker()
    records = PassManager([RemoveIdentity(), NegateRelu(), FixedPoint([RemoveIdentity()])], check=check).run(graph, ctx)
    assert any(n.op == "Relu" for n in graph.nodes) and not any(n.op == "Neg" for n in graph.nodes)
    assert not any(n.op == "Identity" for n in graph.nodes)          # the rest of the pipeline went on
    negate = next(r for r in records if r.name == "negate_relu")
    assert not negate.modified and "changed the outputs" in negate.rolled_back
    assert any(r.name == "remove_identity" and r.modified for r in records)
    assert any(note["pass"] == "negate_relu" and "rolled back" in note["why"] for note in ctx.notes)
    assert len(calls) == 1 + 2                                        # the run, then a replay of its 2 modifying items
    calls.clear()
    _, graph, ctx = _setup()
    PassManager([RemoveIdentity(), FixedPoint([RemoveIdentity()])], check=check).run(graph, ctx)
    assert len(calls) == 1                                            # nothing broke: one check
    assert ort_outputs(to_model(graph, ir_version=8), ctx.reference.feeds)[0][0].shape == ctx.reference.outputs[0][0].shape


class BreakRelu(Pass):
    """A planted bug: a node ONNX Runtime cannot run (Reshape without its shape input)."""
    name = "break_relu"

    def run(self, graph, ctx):
        hit = [n for n in graph.nodes if n.op == "Relu"]
        for n in hit:
            n.op = "Reshape"
        return PassResult(bool(hit))


def test_a_lossless_rewrite_ort_cannot_run_is_rolled_back_with_the_reason():
    _, graph, ctx = _setup()
    check, _ = _checker()
    records = PassManager([BreakRelu(), RemoveIdentity()], check=check).run(graph, ctx)
    broken = next(r for r in records if r.name == "break_relu")
    assert not broken.modified and "cannot run" in broken.rolled_back
    assert any(n.op == "Relu" for n in graph.nodes) and not any(n.op == "Identity" for n in graph.nodes)
