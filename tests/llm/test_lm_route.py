"""A causal LM takes the one compiler route: the same options check, pass manager, verification,
report and CLI as a CNN; a KV-cache ONNX file is compressed without importing torch."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("transformers")

import hewn
from hewn.core.errors import ConfigError
from hewn.frontends.causal_lm import export_causal_lm

from tests.driver.test_progress import _run_in_terminal
from tests.llm.tiny import tiny_lm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _calib(n=3, size=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 384, size) for _ in range(n)]


def _cnn(path):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in
          ((np.ones(8), "s"), (np.zeros(8), "b"), (np.zeros(8), "m"), (np.ones(8), "v"))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w, *bn])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def lm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.onnx"
    export_causal_lm(tiny_lm("llama"), str(path))
    return path


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_a_causal_lm_report_has_the_sections_of_a_cnn_report(tmp_path, kind, lm_file):
    _cnn(tmp_path / "cnn.onnx")
    cnn = hewn.compile(str(tmp_path / "cnn.onnx"), "cpu").report
    model = tiny_lm("llama") if kind == "torch" else str(lm_file)
    lm = hewn.compile(model, hewn.get_target("cpu"), calib_data=_calib(), output=tmp_path / "lm.onnx").report
    from hewn.driver.report import PASS_SECTIONS

    per_pass = {key for key, _ in PASS_SECTIONS}       # what a pass that ran reports (quantization, fusion, ...)
    assert {"passes", "verification", "outcome", "before", "after", "file_bytes"} <= set(cnn) - per_pass
    assert set(cnn) - per_pass - {"latency"} <= set(lm), set(cnn) - set(lm)
    assert [r["pass"] for r in lm["passes"]][-1] == "weight_only" and all("stats" in r for r in lm["passes"])
    v = lm["verification"]
    assert v["onnx_checker"] == "passed" and v["ort_session"] == "loaded" and v["samples"] == 4
    assert v["lossy_passes"] == ["weight_only"] and 0.9 < v["mean_cosine"] <= 1.0
    assert v["greedy_tokens"]["prompts"] == 2 and 0 <= v["greedy_tokens"]["agreement"] <= 1
    assert lm["outcome"]["smaller"] and "4-bit" in lm["outcome"]["summary"]
    assert lm["frontend"]["kind"] == "causal_lm" and lm["frontend"]["layout"]["layers"] == 2
    if kind == "torch":
        assert lm["frontend"]["export_check"] and lm["frontend"]["source"] == "LlamaForCausalLM"
    for command in (["report", str(tmp_path / "lm.onnx")], ["explain", str(tmp_path / "lm.onnx")],
                    ["inspect", str(tmp_path / "lm.onnx")]):
        done = subprocess.run([sys.executable, "-m", "hewn", *command], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stderr)
    explained = subprocess.run([sys.executable, "-m", "hewn", "explain", str(tmp_path / "lm.onnx")],
                               capture_output=True, text=True, timeout=300).stdout
    assert "perplexity" in explained and "-bit" in explained


def test_bad_arguments_are_refused_in_one_line_on_both_routes(tmp_path, lm_file):
    _cnn(tmp_path / "cnn.onnx")
    for model, calib in ((tiny_lm("llama"), _calib()), (str(lm_file), _calib()), (str(tmp_path / "cnn.onnx"), None)):
        with pytest.raises(ConfigError, match="on_error must be"):
            hewn.compile(model, "cpu", calib_data=calib, on_error="bogus")
    with pytest.raises(ConfigError, match="example_inputs= not supported for causal LMs"):
        hewn.compile(tiny_lm("llama"), "cpu", calib_data=_calib(), example_inputs=(1,))
    with pytest.raises(ConfigError, match="eval_data=, metric= not supported"):
        hewn.compile(str(lm_file), "cpu", calib_data=_calib(), eval_data=[1], metric=len)
    with pytest.raises(ConfigError, match="tokenizer= tokenizes calib_data text"):
        hewn.compile(str(tmp_path / "cnn.onnx"), "cpu", tokenizer="tok")
    from hewn.core.errors import InputMismatchError
    with pytest.raises(InputMismatchError, match="token id 999, outside the model's vocabulary of 384"):
        hewn.compile(str(lm_file), "cpu", calib_data=[np.arange(64) * 0 + 999])
    with pytest.raises(ConfigError, match="relative perplexity increase"):
        hewn.compile(str(lm_file), "cpu", calib_data=_calib(), accuracy_budget="high")


def test_on_error_skip_keeps_the_float_decoder_when_the_search_fails(lm_file, monkeypatch):
    from hewn.passes.quant.weight_only import compress

    def broken(*args, **kwargs):
        raise RuntimeError("kernel ladder unavailable")
    monkeypatch.setattr(compress, "Prepared", broken)
    result = hewn.compile(str(lm_file), "cpu", calib_data=_calib(), on_error="skip", measure_latency=False)
    assert result.report["skipped_passes"][0]["pass"] == "weight_only"
    assert "MatMulNBits" not in {n.op_type for n in result.onnx.graph.node}
    assert "kernel ladder unavailable" in result.report["skipped_passes"][0]["error"]


def test_compressing_a_kv_cache_onnx_file_does_not_import_torch(lm_file):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import hewn
        rng = np.random.default_rng(0)
        result = hewn.compile({str(lm_file)!r}, "cpu", calib_data=[rng.integers(0, 384, 64) for _ in range(3)],
                              measure_latency=False)
        assert "MatMulNBits" in {{n.op_type for n in result.onnx.graph.node}}
        loaded = [m for m in ("torch", "transformers") if m in sys.modules]
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]


def test_progress_shows_during_the_weight_search_in_a_terminal(tmp_path, lm_file):
    from tests.llm.test_cli_lm import TEXT, _tokenizer

    (tmp_path / "corpus.txt").write_text(TEXT)
    _tokenizer(tmp_path / "tok")
    env = {k: v for k, v in os.environ.items() if k != "HEWN_PROGRESS"}
    code, out = _run_in_terminal(["compile", str(lm_file), "-o", str(tmp_path / "small.onnx"), "--calib",
                                  str(tmp_path / "corpus.txt"), "--tokenizer", str(tmp_path / "tok")], env)
    assert code == 0, out[-2000:]
    assert "weight ladders" in out and "steps: perplexity" in out and "most accurate options" in out, out[-2000:]
    assert json.loads((tmp_path / "small.report.json").read_text())["passes"][-1]["pass"] == "weight_only"


def test_a_torch_export_with_external_weights_comes_back_whole(monkeypatch, tmp_path):
    """hewn's private export folder is removed when the compile ends: a compiled model that still
    reads weights from it (here: only lossless decoder passes ran) takes them into memory first."""
    from hewn.core import external
    from hewn.frontends import causal_lm
    from hewn.targets import CPU

    monkeypatch.setattr(causal_lm, "EXTERNAL_BYTES", 0)      # weights beside the graph, as for a real LM
    result = hewn.compile(tiny_lm("llama"), "cpu", calib_data=_calib(), passes=list(CPU.decoder), measure_latency=False)
    assert not external.has_external(result.onnx)
    assert result.report["frontend"]["export_check"]
    logits = result.session().run(["logits"], _feeds(result.onnx))[0]
    assert np.isfinite(logits).all()
    result.save(tmp_path / "fused.onnx")


def _feeds(model):
    from hewn.core.kv_cache import example_feeds, layout_from_onnx

    return example_feeds(layout_from_onnx(model), 1, 3, 4)


def test_an_output_over_the_input_models_data_file_is_refused(tmp_path, lm_file):
    """(issue 26, class 5) The causal-LM route protects every file of the input model, its data file
    included, as the other route does."""
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(onnx.load(str(lm_file)), folder / "lm.onnx", save_as_external_data=True, location="weights.bin",
              size_threshold=1024)
    before = (folder / "weights.bin").read_bytes()
    with pytest.raises(hewn.HewnError, match="weights.bin"):
        hewn.compile(str(folder / "lm.onnx"), "cpu", calib_data=_calib(), measure_latency=False,
                     output=folder / "weights.bin")
    assert (folder / "weights.bin").read_bytes() == before


def test_negative_token_ids_are_refused(lm_file):
    """(issue 26, class 10) Negative ids used to wrap around silently in the embedding Gather."""
    from hewn.core.errors import InputMismatchError

    with pytest.raises(InputMismatchError, match="token id -3"):
        hewn.compile(str(lm_file), "cpu", calib_data=[np.arange(64) - 3])
