"""Unstructured / 2:4 sparsity with sparse storage, and the HTML report and CLI around them."""
import base64
import json
from html.parser import HTMLParser

import numpy as np
import onnx
import pytest
import torch

import hewn
from hewn import QuantizeConfig, compile
from hewn.cli import main
from hewn.core.ir import to_graph
from hewn.core.runtime import make_session
from hewn.models.digits import digits_cnn
from hewn.passes.prune.sparsify import reduction_axis


@pytest.fixture(scope="module")
def digits():
    model, data = digits_cnn()
    return model, (torch.from_numpy(data.x_test[:1]),), [(data.x_train[i:i + 1],) for i in range(16)]


def test_unstructured_sparsity_is_stored_sparse_and_runs_the_same(digits):
    model, ex, _ = digits
    dense = compile(model, "cpu", example_inputs=ex, measure_latency=False)
    result = compile(model, "cpu", example_inputs=ex, sparsity=0.8, measure_latency=False)
    sp = result.report["sparsity"]
    assert sp["layers"] and all(abs(v - 0.8) < 0.01 for v in sp["layers"].values()), sp
    storage = result.report["sparse_storage"]
    assert storage["sparse_initializers"] == len(result.onnx.graph.sparse_initializer) > 0
    assert result.report["file_bytes"]["after"] < 0.75 * dense.report["file_bytes"]["after"]
    # the stored model computes what the dense zeroed weights compute: densify and compare in ORT
    densified = onnx.ModelProto()
    densified.CopyFrom(result.onnx)
    for sparse in densified.graph.sparse_initializer:
        values = onnx.numpy_helper.to_array(sparse.values)
        full = np.zeros(int(np.prod(sparse.dims)), values.dtype)
        full[onnx.numpy_helper.to_array(sparse.indices)] = values
        densified.graph.initializer.append(onnx.numpy_helper.from_array(full.reshape(sparse.dims),
                                                                         sparse.values.name))
    del densified.graph.sparse_initializer[:]
    x = {"x": ex[0].numpy()}
    np.testing.assert_array_equal(make_session(result.onnx).run(None, x)[0], make_session(densified).run(None, x)[0])
    assert 0.5 < result.report["verification"]["mean_cosine"] < 1.0  # lossy, and the report says by how much


def test_two_four_sparsity_pattern(digits):
    model, ex, _ = digits
    result = compile(model, "cuda", example_inputs=ex, sparsity="2:4")
    graph = to_graph(result.onnx)
    checked = 0
    for node in graph.nodes:
        if node.op not in ("Conv", "Gemm", "MatMul") or node.name not in result.report["sparsity"]["layers"]:
            continue
        w = node.inputs[1]
        while w.inputs:  # through the fp16 copy
            w = w.inputs[0].inputs[0]
        values = np.asarray(w.values, np.float32)
        groups = np.moveaxis(values, reduction_axis(node, values), -1).reshape(-1, 4)
        assert ((groups == 0).sum(axis=1) >= 2).all(), node.name
        checked += 1
    assert checked >= 2
    assert "sparse tensor cores" in result.report["sparsity"]["speed_note"]


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def test_html_report_is_well_formed_with_embedded_plots(digits, tmp_path):
    model, ex, calib = digits
    # int8 chosen without timing: on a busy machine int8 can time as "not faster" and stay float
    result = compile(model, "cpu", example_inputs=ex, calib_data=calib, quantize=QuantizeConfig(measure_speed=False))
    path = result.save(tmp_path / "digits.onnx")
    page = (tmp_path / "digits.report.html").read_text()
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [], checker.stack
    assert len(checker.images) >= 2  # trade-off and per-layer SQNR
    for img in checker.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("Before and after", "Quantization", "SQNR", "Recommended ONNX Runtime settings", "Passes"):
        assert text in page, text
    (tmp_path / "digits.report.html").unlink()
    assert main(["report", str(path)]) == 0
    assert (tmp_path / "digits.report.html").read_text() == page  # rendered from the JSON alone, deterministic


def test_cli_prune_bench_and_json(digits, tmp_path, capsys):
    model, ex, _ = digits
    src = tmp_path / "digits.onnx"
    compile(model, "cpu", example_inputs=ex, measure_latency=False).save(src)
    before = src.read_bytes()
    out = tmp_path / "pruned.onnx"
    # 30% of this small MLP's MACs cost more than the 0.05 a fixed amount may: written, exit status 3
    assert main(["compile", str(src), "-o", str(out), "--prune", "0.3", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["quality"]["warning"].startswith("QUALITY LOST") and out.exists()
    assert report["pruning"]["reached"] >= 0.25 and src.read_bytes() == before
    assert main(["bench", str(src), "--compiled", str(out), "--runs", "3", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["original_ms"] > 0 and 0 < bench["ratio_to_original"] and bench["output_cosine"] < 1.0
    assert main(["compile", str(src), "-o", str(tmp_path / "x.onnx"), "--sparsity", "lots"]) == 2
    assert "--sparsity 'lots'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compile", str(src), "-o", str(tmp_path / "x.onnx"), "--target", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err.replace('"', "'")  # and lists cpu, cuda, mobile


def test_a_prune_that_destroys_a_trained_model_warns_and_strict_refuses_it(digits, tmp_path):
    """(issue 29) prune= was the one lossy step with no check: a trained CNN (sklearn's digits) pruned
    by 70% of its MACs is returned with QUALITY LOST in its summary, a HewnWarning naming where the
    outputs drift and what recovers it; strict=True refuses it and writes nothing."""
    model, ex, calib = digits
    with pytest.warns(hewn.HewnWarning, match="QUALITY LOST: prune_channels .* Try a smaller prune="):
        result = compile(model, "cpu", example_inputs=ex, calib_data=calib, prune=0.7, quantize=False,
                         metric="top1", measure_latency=False)
    q = result.report["quality"]
    assert q["metric"] == "top1" and q["error"] > 0.05 and q["samples"] >= 8
    assert result.report["outcome"]["summary"].startswith("QUALITY LOST") and "top-1 agreement" in q["words"]
    assert q["drift"], "no tensor shows where the outputs drift"
    with pytest.raises(hewn.VerificationError, match="strict=True: no model was returned or written"):
        compile(model, "cpu", example_inputs=ex, calib_data=calib, prune=0.7, quantize=False, metric="top1",
                measure_latency=False, strict=True, output=str(tmp_path / "refused.onnx"))
    assert not list(tmp_path.iterdir())
    mild = compile(model, "cpu", example_inputs=ex, calib_data=calib, prune=0.05, quantize=False, metric="top1",
                   measure_latency=False, strict=True)   # within the tolerance: strict lets it through
    assert "warning" not in mild.report["quality"] and "top-1 agreement" in mild.report["outcome"]["summary"]
