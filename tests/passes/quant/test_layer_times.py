"""Per-layer int8 vs float kernel times: measured as the layer sits in the int8 model, cached per
machine, and deciding which layers stay float (issue 27, Build 3)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch

import hewn
from hewn.passes.quant import layer_times
from hewn.passes.quant.layer_times import LayerTimes, _layer, _model, input_shapes


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.b = torch.nn.Conv2d(16, 8, 1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.relu(self.dw(x))
        return self.fc(torch.relu(self.b(x)).flatten(1))


def _calib(n=16):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((1, 3, 8, 8)).astype(np.float32),) for _ in range(n)]


@pytest.fixture
def int8_model():
    x = torch.randn(1, 3, 8, 8)
    result = hewn.compile(Net().eval(), "cpu", example_inputs=(x,), calib_data=_calib(),
                          quantize=hewn.QuantizeConfig(measure_speed=False, force=True), measure_latency=False)
    return result


def test_a_layer_model_computes_what_the_layer_computes_in_the_int8_graph(int8_model):
    graph = gs.import_onnx(int8_model.onnx)
    convs = [n for n in graph.nodes if n.op == "Conv"]
    layer = _layer(convs[1])   # the depthwise conv: DQ input, DQ weight, Relu, Q output
    assert layer is not None and layer["act"] is not None and layer["q"] is not None
    shape = (1, 16, 8, 8)
    dtype = np.asarray(layer["x"][2]).dtype
    feed = {"X": np.random.default_rng(1).integers(0, 200, shape).astype(dtype)}
    q8, fl = (ort.InferenceSession(_model(layer, shape, i).SerializeToString()).run(None, feed)[0] for i in (True, False))
    assert q8.dtype == fl.dtype == np.asarray(layer["q"][1]).dtype
    # the same weights (int8 vs their dequantized float): outputs agree to a step or two of the int8 grid
    assert np.abs(q8.astype(np.int32) - fl.astype(np.int32)).max() <= 2


def test_times_are_measured_once_then_read_from_the_machine_cache(int8_model, tmp_path):
    graph = gs.import_onnx(int8_model.onnx)
    names = [n.name for n in graph.nodes if n.op in ("Conv", "Gemm")]
    shapes = input_shapes(int8_model.onnx, names, {graph.inputs[0].name: _calib(1)[0][0]})
    first = LayerTimes(path=tmp_path / "t.json")
    rows = first.measure(graph, names, shapes)
    assert set(rows) == set(names) and all(r["float_ms"] > 0 and r["int8_ms"] > 0 for r in rows.values())
    assert first.measured == len(names)
    second = LayerTimes(path=tmp_path / "t.json")
    assert second.measure(graph, names, shapes) == rows and second.measured == 0


def test_a_layer_int8_runs_slower_on_stays_float_and_the_report_says_why(monkeypatch, tmp_path):
    """Times are the machine's: faked here so that the depthwise conv measures slower in int8."""
    monkeypatch.setenv("HEWN_CACHE", str(tmp_path))

    def fake(self, graph, names, shapes, time_limit_s=0):
        return {n: ({"float_ms": 0.01, "int8_ms": 0.05, "saved_ms": -0.04} if "dw" in n else
                    {"float_ms": 0.05, "int8_ms": 0.01, "saved_ms": 0.04}) for n in names}

    monkeypatch.setattr(LayerTimes, "measure", fake)
    monkeypatch.setattr("hewn.passes.quant.quantize.timed_verdict",
                        lambda *a, **k: {"verdict": "faster", "ratio": 0.5, "low": 0.4, "high": 0.6, "runs": 40,
                                         "seconds": 1.0})
    x = torch.randn(1, 3, 8, 8)
    result = hewn.compile(Net().eval(), "cpu", example_inputs=(x,), calib_data=_calib(), measure_latency=False,
                          quantize=hewn.QuantizeConfig(budget=0.5))
    rows = {r["node"]: r for r in result.report["quantization"]["layers"]}
    dw = next(r for n, r in rows.items() if "dw" in n)
    assert dw["precision"] == "float" and dw["decision"] == "float: int8 measured slower here"
    assert dw["float_ms"] == 0.01 and dw["int8_ms"] == 0.05
    assert any(r["decision"] == "int8" and r["int8_ms"] == 0.01 for r in rows.values())
    assert "one-node model" in result.report["quantization"]["layer_times"]["how"]


def test_mixed_precision_gives_up_the_layers_int8_saves_least_on_first():
    from hewn.passes.quant.mixed_precision import _rank

    # equal accuracy gains: the layer where int8 saves 0.01 ms goes float before the one saving 1 ms
    assert _rank(0.01, 0.01) < _rank(0.01, 1.0)
    assert _rank(0.0, 0.001) > _rank(1e-6, 5.0)   # float that does not help ranks after any that does
    assert layer_times.slower_in_int8({"float_ms": 0.1, "int8_ms": 0.2})
    assert not layer_times.slower_in_int8({"float_ms": 0.001, "int8_ms": 0.002})   # inside the noise
