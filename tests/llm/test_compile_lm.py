"""hewn.compile on a causal LM: KV-cache export, weight-only compression within the perplexity
budget measured on the calibration text, a report with per-layer bits, and clear refusals."""
import json

import numpy as np
import onnx
import pytest

pytest.importorskip("transformers")

import hewn
from hewn.core.errors import ConfigError
from hewn.core.runtime import file_session
from hewn.frontends.causal_lm import export_causal_lm, layout_of
from hewn.core.kv_cache import Decoder

from tests.llm.tiny import tiny_lm


def _calib(n=3, size=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 384, size) for _ in range(n)]


def test_compile_causal_lm_within_budget(tmp_path):
    model = tiny_lm("llama")
    out = tmp_path / "lm.onnx"
    result = hewn.compile(model, "cpu", calib_data=_calib(), accuracy_budget=0.01, output=out)
    weights = result.report["weights"]
    assert weights["perplexity"] <= weights["float_perplexity"] * 1.01 + 1e-9
    ops = {n.op_type for n in result.onnx.graph.node}
    assert "MatMulNBits" in ops and "GatherBlockQuantized" in ops
    assert "Attention" in ops and "Softmax" not in ops     # the attention fused (opset 23), in float
    assert "RotaryEmbedding" in ops and "Neg" not in ops
    assert result.report["fusions"]["attention"]["fused"] == 2 and "fusions" not in weights
    assert all(r["bits"] in (4, 8) for r in weights["layers"])
    assert json.loads((tmp_path / "lm.report.json").read_text())["weights"]["budget"] == 0.01
    html = (tmp_path / "lm.report.html").read_text()
    assert "attention: 2 rewritten" in html and "rotary: 4 rewritten" in html and "reshape: " in html
    lat = result.report["latency"]                       # both models timed, prefill and decode
    assert all(lat[k]["before_ms"] > 0 and lat[k]["after_ms"] > 0 and lat[k]["speed"] for k in ("prefill", "decode"))
    assert "decode" in result.report["outcome"]["summary"]
    # every per-layer row says what the emitted graph holds
    nodes = {n.name: n for n in result.onnx.graph.node}
    for row in weights["layers"]:
        attrs = {a.name: a.i for a in nodes[row["node"]].attribute}
        assert (attrs["bits"], attrs["block_size"]) == (row["bits"], row["block"]), row["node"]
        if row["kind"] == "matmul":
            assert nodes[row["node"]].op_type == "MatMulNBits" and attrs["accuracy_level"] == row["accuracy_level"]
        else:
            assert nodes[row["node"]].op_type == "GatherBlockQuantized"
    # the saved model runs with its cache and its calibration perplexity is what the report says
    layout = layout_of(model)
    from hewn.frontends.lm_text import token_windows
    ppl = Decoder(file_session(str(out)), layout).perplexity(token_windows(_calib(), None))
    assert ppl == pytest.approx(weights["perplexity"], rel=1e-4)


def test_a_larger_budget_takes_more_steps(tmp_path):
    model = tiny_lm("gemma3")
    path = str(tmp_path / "f.onnx")
    layout = export_causal_lm(model, path)
    from hewn.passes.quant.weight_only.search import Prepared, WeightConfig
    prepared = Prepared(path, layout, _calib(), WeightConfig(), lambda m: None)
    tight, loose = prepared.choose(0.0), prepared.choose(5.0)
    assert tight.report["moves_taken"] <= loose.report["moves_taken"]
    assert loose.report["moves_taken"] == loose.report["moves"] > 0  # +500% admits every step down
    for row in loose.report["layers"]:  # each layer ends on the last rung of its measured ladder
        assert (row["bits"], row["block"]) == (row["options"][-1]["bits"], row["options"][-1]["block"])
    assert tight.report["perplexity"] <= tight.report["limit"] or "over_budget" in tight.report


def test_onnx_kv_cache_model_with_token_calibration(tmp_path):
    model = tiny_lm("qwen2")
    path = tmp_path / "q.onnx"
    export_causal_lm(model, str(path))
    before = path.read_bytes()
    result = hewn.compile(str(path), "cpu", calib_data=_calib(), accuracy_budget=0.05)
    assert "MatMulNBits" in {n.op_type for n in result.onnx.graph.node}
    assert path.read_bytes() == before  # the input file is never modified


def test_refusals_are_one_clear_line(tmp_path):
    model = tiny_lm("llama")
    with pytest.raises(ConfigError, match="tokenizer="):
        hewn.compile(model, "cpu", calib_data=["some text"])
    with pytest.raises(ConfigError, match="target 'cuda'"):
        hewn.compile(model, "cuda", calib_data=_calib())
    with pytest.raises(ConfigError, match="prune= not supported for causal LMs"):
        hewn.compile(model, "cpu", calib_data=_calib(), prune=0.5)
    with pytest.raises(ConfigError, match="at least 16"):
        hewn.compile(model, "cpu", calib_data=[np.array([1, 2, 3])])


def test_measure_latency_false_is_honoured_for_causal_lms():
    result = hewn.compile(tiny_lm("llama"), "cpu", calib_data=_calib(), measure_latency=False)
    assert "latency" not in result.report and "decode" not in result.report["outcome"]["summary"]


def test_a_causal_lm_without_text_calibration_compiles_as_before():
    """example_inputs and no text: exported without a cache, the float/int8 pipeline as for any model."""
    import torch
    model = tiny_lm("gpt2")
    ids = torch.randint(0, 384, (1, 8))
    result = hewn.compile(model, "cpu", example_inputs={"input_ids": ids}, measure_latency=False)
    assert "weights" not in result.report and result.report["frontend"]["use_cache"]


def test_weights_streamed_from_external_data_give_the_same_model(tmp_path):
    from hewn.passes.quant.weight_only.search import WeightConfig, compress
    model = tiny_lm("llama")
    inline = str(tmp_path / "inline.onnx")
    layout = export_causal_lm(model, inline)
    (tmp_path / "ext").mkdir()
    external = str(tmp_path / "ext" / "lm.onnx")
    onnx.save(onnx.load(inline), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="lm.onnx.data", size_threshold=0)
    assert any(onnx.external_data_helper.uses_external_data(t) for t in onnx.load(external, load_external_data=False).graph.initializer)
    a = compress(inline, layout, _calib(), WeightConfig(budget=0.05))
    b = compress(external, layout, _calib(), WeightConfig(budget=0.05))
    assert a.report["perplexity"] == pytest.approx(b.report["perplexity"], rel=1e-6)
    # the same tensors; values equal up to float summation order (calibration statistics come
    # from two ORT sessions, one reading the weights from disk)
    ta = {i.name: onnx.numpy_helper.to_array(i) for i in a.model.graph.initializer}
    tb = {i.name: onnx.numpy_helper.to_array(i) for i in b.model.graph.initializer}
    assert ta.keys() == tb.keys()
    for name in ta:
        if ta[name].dtype == np.uint8:
            assert (ta[name] != tb[name]).mean() < 0.01, name
        else:
            np.testing.assert_allclose(ta[name], tb[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in b.model.graph.initializer)


def test_text_detection_never_converts_user_data():
    import torch
    from hewn.frontends.lm_text import takes_text
    assert takes_text("some text") and takes_text(["a", "b"]) and takes_text([np.arange(5)]) and takes_text([[1, 2, 3]])
    assert takes_text([torch.arange(5)])
    assert not takes_text([(torch.zeros(2, 4), torch.zeros(2))])        # DataLoader-style batches
    assert not takes_text([torch.zeros(4, dtype=torch.bfloat16)])        # float tensors are inputs, not tokens
    assert not takes_text([{"x": np.zeros(3)}]) and not takes_text(None) and not takes_text([])
    assert not takes_text([np.zeros(5, np.float32)]) and not takes_text([[1.0, 2.0]]) and not takes_text([[True]])
