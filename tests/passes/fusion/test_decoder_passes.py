"""The decoder rewrites as registered-style passes (issue 25): on the tiny exported causal LMs they
rewrite exactly what the ModelProto functions they replace did (op counts captured from those
functions, torch 2.13 / transformers 5.24 exports), the result matches the unfused graph in ORT,
and weights kept on disk are never read."""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
import onnx
import pytest
from hewn.core import external
from hewn.core.ir import load_model, to_graph, to_model
from hewn.core.kv_cache import layout_from_onnx
from hewn.core.manager import PassManager
from hewn.core.pass_infra import Context, Pass
from hewn.frontends.causal_lm import export_causal_lm
from hewn.passes.cleanup.reshape_targets import ConstantReshapeTargets
from hewn.passes.fusion.fuse_cached_attention import FuseCachedAttention
from hewn.passes.fusion.fuse_gelu import FuseGeluTanh
from hewn.passes.fusion.fuse_rotary import FuseRotary

from tests.helpers import run_pass
from tests.llm.tiny import tiny_lm

PASSES = (ConstantReshapeTargets, FuseCachedAttention, FuseRotary, FuseGeluTanh)
STEPS = ("reshape", "attention", "rotary", "gelu")
# family: nodes of the export, then (fused, nodes after) per step of STEPS, then the op counts at the end
BEFORE = {
    "llama": (616, [(14, 486), (2, 323), (4, 239), (0, 239)], dict(
        Add=12, And=2, Attention=2, Cast=20, Concat=8, Constant=67, ConstantOfShape=2, Cos=1, Div=7, Equal=1, Expand=1,
        Flatten=1, Gather=6, Identity=4, LessOrEqual=1, MatMul=15, Mul=19, Pow=5, Range=3, ReduceMean=5, Reshape=13,
        RotaryEmbedding=4, Shape=8, Sigmoid=2, Sin=1, Slice=2, Sqrt=5, Transpose=8, Unsqueeze=13, Where=1)),
    "gemma3": (771, [(14, 641), (2, 486), (4, 410), (2, 386)], dict(
        Add=20, And=6, Attention=2, Cast=27, Concat=10, Constant=116, ConstantOfShape=3, Cos=2, Div=17, Equal=2,
        Expand=2, Flatten=1, Gather=6, Gelu=2, Greater=1, Identity=11, LessOrEqual=1, MatMul=15, Mul=38, Pow=13,
        Range=3, ReduceMean=13, Reshape=14, RotaryEmbedding=4, Shape=11, Sin=2, Slice=4, Sqrt=13, Sub=1, Transpose=8,
        Unsqueeze=16, Where=2)),
    "qwen2": (626, [(14, 496), (2, 333), (4, 249), (0, 249)], dict(
        Add=18, And=2, Attention=2, Cast=20, Concat=8, Constant=67, ConstantOfShape=2, Cos=1, Div=7, Equal=1, Expand=1,
        Flatten=1, Gather=6, Identity=8, LessOrEqual=1, MatMul=15, Mul=19, Pow=5, Range=3, ReduceMean=5, Reshape=13,
        RotaryEmbedding=4, Shape=8, Sigmoid=2, Sin=1, Slice=2, Sqrt=5, Transpose=8, Unsqueeze=13, Where=1)),
    "gpt2": (552, [(21, 334), (2, 306), (0, 306), (2, 282)], dict(
        Add=8, And=2, Attention=2, Cast=8, Concat=15, Constant=90, ConstantOfShape=2, Equal=1, Expand=1, Flatten=1,
        Gather=23, Gelu=2, Gemm=8, Identity=14, LayerNormalization=5, LessOrEqual=1, MatMul=1, Mul=2, Range=3,
        Reshape=32, Shape=22, Split=2, Transpose=8, Unsqueeze=28, Where=1)),
}


def _ops(model: onnx.ModelProto) -> dict:
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def test_the_passes_are_registered_style():
    names = [p.name for p in PASSES]
    assert names == ["constant_reshape_targets", "fuse_cached_attention", "fuse_rotary", "fuse_gelu_tanh"]
    # each upgrades the graph itself only when it matches: no min_opset that would upgrade every model
    assert [p.min_opset for p in PASSES] == [Pass.min_opset] * 4
    from hewn.passes import REGISTRY
    assert all(REGISTRY[cls.name] is cls for cls in PASSES)
    for cls in PASSES:
        assert cls.lossless and dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
        assert repr(cls()) == f"{cls.__name__}()"


@pytest.mark.parametrize("family", sorted(BEFORE))
def test_the_passes_rewrite_what_the_proto_functions_did(tmp_path, family):
    layout = export_causal_lm(tiny_lm(family), str(tmp_path / "lm.onnx"))
    unfused = onnx.load(tmp_path / "lm.onnx")
    nodes, steps, final = BEFORE[family]
    assert len(unfused.graph.node) == nodes, "the export changed: the captured numbers no longer apply"
    model = unfused
    for cls, step, (fused, after) in zip(PASSES, STEPS, steps):
        model, stats = run_pass(cls(), model)
        assert (stats["fused"], len(model.graph.node)) == (fused, after), (step, stats)
        assert fused or "opset" not in stats   # nothing matched: no opset upgrade either
    assert _ops(model) == final
    from hewn.core.measure import compare
    from hewn.frontends.kv_cache_onnx import reference

    # the logits and the cache at the four decoder sizes compile() checks (a left-padded batch among them)
    cmp = compare(reference(unfused, layout).outputs, reference(model, layout).outputs, rtol=1e-4, atol=1e-5)
    assert cmp.passed, cmp.as_dict()


def _on_disk(graph) -> set[str]:
    return {name for name, t in graph.tensors().items() if external.on_disk(t)}


def test_weights_on_disk_are_never_read(tmp_path, monkeypatch):
    """The four passes in a PassManager on a graph whose weights are external data: nothing calls
    the memmap that would read one; each stays on disk (a memmap stays a memmap) and is exported
    as the same reference."""
    export_causal_lm(tiny_lm("gemma3"), str(tmp_path / "export.onnx"))
    onnx.save(onnx.load(tmp_path / "export.onnx"), tmp_path / "lm.onnx", save_as_external_data=True,
              location="lm.data", size_threshold=1024)
    model = load_model(str(tmp_path / "lm.onnx"))
    refs = {t.name: external.info(t) for t in model.graph.initializer if external.is_external(t)}
    graph = to_graph(model)
    embedding = next(t for t in graph.tensors().values() if external.on_disk(t) and "embed" in t.name)
    assert isinstance(embedding.values, np.memmap) and len(refs) > 10
    before = _on_disk(graph)

    def no_reads(tensor):
        raise AssertionError(f"weight {tensor.name} was read")

    monkeypatch.setattr(external, "memmap", no_reads)
    ctx = Context(None, ir_version=model.ir_version)
    records = PassManager([cls() for cls in PASSES]).run(graph, ctx)
    assert [r.stats["fused"] for r in records] == [s[0] for s in BEFORE["gemma3"][1]]
    assert _on_disk(graph) == before
    out = to_model(graph, ir_version=ctx.ir_version)
    monkeypatch.undo()
    assert {t.name: external.info(t) for t in out.graph.initializer if external.is_external(t)} == refs
    assert isinstance(graph.tensors()[embedding.name].values, np.memmap)


def test_the_decoder_pipeline_on_weights_in_a_data_file(tmp_path):
    """compile() with the target's decoder passes on a model whose weights are in a data file: the
    same rewrites as with the weights inline (that the passes read none of them is the test above;
    the ONNX frontend does scan them once for NaN/Inf)."""
    import hewn
    from hewn.targets import CPU

    export_causal_lm(tiny_lm("llama"), str(tmp_path / "export.onnx"))
    onnx.save(onnx.load(tmp_path / "export.onnx"), tmp_path / "lm.onnx", save_as_external_data=True,
              location="lm.data", size_threshold=1024)
    model = onnx.load(tmp_path / "lm.onnx", load_external_data=False)
    rng = np.random.default_rng(0)
    result = hewn.compile(str(tmp_path / "lm.onnx"), "cpu", calib_data=[rng.integers(0, 384, 64)],
                          passes=list(CPU.decoder), measure_latency=False)
    report = result.report["fusions"]
    assert [report[s]["fused"] for s in STEPS] == [s[0] for s in BEFORE["llama"][1]], report
    assert _ops(result.onnx) == BEFORE["llama"][2]
    assert layout_from_onnx(result.onnx) == layout_from_onnx(model)
    assert "rtol" in result.report["verification"]          # lossless: checked to the target's tolerance
