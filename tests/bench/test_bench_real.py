"""bench.real's own logic on tiny inputs: which NNCF preset a net gets, the "beats" column, the
frontier plot, and that MiniLM's calibration and evaluation sentences never overlap."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _conv_model(activation: str) -> onnx.ModelProto:
    """x -> Conv 3x3 (4 -> 8) -> activation -> y, opset 17."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    if activation == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif activation == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    elif activation == "hardswish":   # x * Clip(x + 3, 0, 6) / 6, as Paddle2ONNX writes it
        inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0))]
        nodes += [helper.make_node("Add", ["c", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["k"]),
                  helper.make_node("Mul", ["c", "k"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])]
    elif activation == "squeeze_excite":  # x * HardSigmoid(Conv(x)): a gate, not an activation of x
        inits.append(numpy_helper.from_array(rng.normal(size=(8, 8, 1, 1)).astype(np.float32), "w2"))
        nodes += [helper.make_node("Conv", ["c", "w2"], ["g"]), helper.make_node("HardSigmoid", ["g"], ["h"]),
                  helper.make_node("Mul", ["c", "h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("activation, found", [("relu", set()), ("silu", {"SiLU"}), ("hardswish", {"HardSwish"}),
                                               ("squeeze_excite", set())])
def test_unbounded_activations_pick_nncf_mixed_preset(activation, found):
    from bench.ort_anchors import unbounded_activations

    assert unbounded_activations(_conv_model(activation)) == found


def test_nncf_quantize_writes_a_quantized_model(tmp_path):
    pytest.importorskip("nncf")
    import onnxruntime as ort

    from bench.ort_anchors import nncf_quantize

    fp32, out = tmp_path / "silu.onnx", tmp_path / "silu_nncf.onnx"
    onnx.save(_conv_model("silu"), str(fp32))
    rng = np.random.default_rng(1)
    calib = [{"x": rng.normal(size=(1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    info = nncf_quantize(fp32, out, calib)
    assert info["preset"] == "mixed" and info["unbounded_activations"] == ["SiLU"]
    model = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, calib[0])


@dataclass
class _Task:
    primary: str = "cosine"
    lower_is_better: bool = False


def _row(ratio, value, holds):
    return {"make_s": 1.0, "cosine": value, "quality_holds": holds, "ratio_to_fp32": ratio, "latency_ms": ratio}


def test_beats_lists_faster_anchors_that_hold_or_are_better():
    from bench.real import HEWN_DEFAULT, _beaten_by, _table

    rows = {"FP32": _row(1.0, 1.0, True),
            "ORT dynamic": _row(0.40, 0.996, True),        # faster, holds: hewn loses to it
            "ORT static S8S8": _row(0.30, 0.99, False),    # faster, fails the bar, worse than hewn: not a loss
            "ORT static U8S8+rr": _row(0.35, 0.9975, False),  # faster and better than hewn (which misses too)
            "NNCF PTQ": _row(0.90, 0.999, True),           # slower: hewn wins
            "hewn budget 0.03": _row(0.20, 0.98, False),   # hewn's own points are not anchors
            HEWN_DEFAULT: _row(0.45, 0.997, True)}
    beats = _beaten_by(_Task(), rows)
    assert [b.split(" (")[0] for b in beats] == ["ORT dynamic", "ORT static U8S8+rr"]
    rows[HEWN_DEFAULT]["beats"] = beats
    table = _table({"m": rows})
    assert "ORT dynamic (0.40, holds)" in table and "cosine 0.9975" in table
    assert _beaten_by(_Task(), {"ORT dynamic": _row(0.5, 0.999, True), HEWN_DEFAULT: _row(0.45, 0.99, False)}) == []
    # CER: lower is better
    cer = {"ORT dynamic": {**_row(0.4, 0.0, False), "cer": 0.10}, HEWN_DEFAULT: {**_row(0.5, 0.0, False), "cer": 0.12}}
    assert len(_beaten_by(_Task("cer", True), cer)) == 1


def test_frontier_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.real import HEWN_DEFAULT, plot_frontier

    rows = {"FP32": _row(1.0, 1.0, True), "ORT dynamic": _row(0.4, 0.996, True),
            HEWN_DEFAULT: {**_row(0.45, 0.997, True), "budget": 0.01},
            "hewn budget 0.03": {**_row(0.4, 0.99, False), "budget": 0.03},
            "NNCF PTQ": {"make_s": 1.0, "failed": "ValueError: no"},
            "_task": {"primary": "cosine", "lower_is_better": False, "bar": 0.995}}
    path = tmp_path / "frontier.png"
    plot_frontier({"model a": rows, "model b": {"(bench)": {"make_s": 0.0, "failed": "x"}}}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_minilm_calibration_and_evaluation_sentences_are_disjoint():
    from bench.real_tasks import _sentence_sets

    calib, evals = _sentence_sets(64, 260)   # more than sentences() holds: topped up from pydoc topics
    assert len(calib) == 64 and len(evals) == 260 and len(set(evals)) == 260
    assert not set(calib) & set(evals)
