"""A detector's box-decoding tail stays float (YOLOv8's Detect head, built small here)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch

import hewn
from hewn.passes.quant.heads import decoding_tail


class TinyDetect(torch.nn.Module):
    """A conv body, box (DFL over 8 bins) and class convs, and YOLOv8's decoding: softmax over
    bins, the fixed arange conv, grid -/+ distances, centre and size times the stride, sigmoid scores."""

    def __init__(self, bins: int = 8, classes: int = 3):
        super().__init__()
        self.bins = bins
        self.body = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.box = torch.nn.Conv2d(16, 4 * bins, 1)
        self.cls = torch.nn.Conv2d(16, classes, 1)
        self.dfl = torch.nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1)
        ys, xs = torch.meshgrid(torch.arange(8.0) + 0.5, torch.arange(8.0) + 0.5, indexing="ij")
        self.register_buffer("grid", torch.stack((xs.flatten(), ys.flatten()))[None])   # [1, 2, 64]

    def forward(self, x):
        f = torch.relu(self.body(x))
        b, c = self.box(f), self.cls(f)
        n = b.shape[2] * b.shape[3]
        dist = self.dfl(b.view(1, 4, self.bins, n).transpose(2, 1).softmax(1)).view(1, 4, n)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = self.grid - lt, self.grid + rb
        boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * 2.0
        return torch.cat((boxes, c.view(1, -1, n).sigmoid()), 1)


def _export(module, tmp_path, shape=(1, 3, 16, 16)) -> onnx.ModelProto:
    path = tmp_path / "m.onnx"
    torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=["output0"])
    return onnx.load(str(path))


def test_the_decoding_tail_is_found_and_the_learned_convs_are_not(tmp_path):
    model = _export(TinyDetect(), tmp_path)
    graph = gs.import_onnx(model)
    tail = set(decoding_tail(graph))
    ops = {n.op for n in graph.nodes if n.name in tail}
    assert {"Sigmoid", "Softmax", "Concat", "Sub", "Add", "Mul", "Conv"} <= ops
    convs = [n for n in graph.nodes if n.op == "Conv"]
    assert [n.name in tail for n in convs] == [False, False, False, True]   # only DFL's fixed arange conv


def test_a_classifier_softmax_is_not_a_decoding_tail(tmp_path):
    model = _export(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                        torch.nn.Linear(8 * 14 * 14, 10), torch.nn.Softmax(-1)), tmp_path)
    assert decoding_tail(gs.import_onnx(model)) == []


def test_int8_keeps_the_tail_float_and_says_so(tmp_path):
    model = _export(TinyDetect(), tmp_path)
    rng = np.random.default_rng(0)
    calib = [{"images": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(16)]
    tail = set(decoding_tail(gs.import_onnx(model)))
    result = hewn.compile(model, "cpu", calib_data=calib, quantize=hewn.QuantizeConfig(measure_speed=False, force=True))
    graph = gs.import_onnx(result.onnx)
    q = result.report["quantization"]
    assert any("box-decoding tail" in n["why"] for n in result.report["left_intact"]), result.report["left_intact"]
    assert not _quantized_inside(graph, tail), _quantized_inside(graph, tail)
    assert {"/body/Conv", "/box/Conv", "/cls/Conv"} <= {r["node"] for r in q["layers"] if r["precision"] == "int8"}
    dfl = next(r for r in q["layers"] if r["node"] == "/dfl/Conv")
    assert dfl["decision"] == "float: a detector's box-decoding tail"
    # float_heads=False quantizes into the tail (what the default protects against)
    again = hewn.compile(model, "cpu", calib_data=calib,
                         quantize=hewn.QuantizeConfig(measure_speed=False, force=True, float_heads=False))
    assert _quantized_inside(gs.import_onnx(again.onnx), tail)


def _quantized_inside(graph, tail: set) -> list:
    """Tail nodes whose output is quantized (the head convs' own outputs may be: they are not the tail)."""
    return sorted(p.name for n in graph.nodes if n.op == "QuantizeLinear" for p in n.inputs[0].inputs
                  if p.name in tail)


def test_metric_boxes_judges_int8_by_box_f1_against_the_originals_boxes(tmp_path):
    from hewn.core.boxes import box_f1

    model = _export(TinyDetect(), tmp_path)
    rng = np.random.default_rng(0)
    calib = [{"images": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(16)]
    result = hewn.compile(model, "cpu", calib_data=calib, metric="boxes",
                          quantize=hewn.QuantizeConfig(measure_speed=False, force=True))
    q, v = result.report["quality"], result.report["verification"]
    assert q["metric"] == "box F1" and "box F1" in q["words"]
    import onnxruntime as ort
    ref = ort.InferenceSession(model.SerializeToString())
    from hewn.core.runtime import spread

    checked = spread(calib, 8)[0]   # the verification samples of a small calib_data
    again = box_f1([ref.run(None, f) for f in checked], [result.session().run(None, f) for f in checked])
    assert abs(again - v["task_score"]) < 1e-9 and 0 < again <= 1


def test_metric_boxes_on_a_model_without_detections_is_one_clear_line(tmp_path):
    model = _export(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)),
                    tmp_path)
    calib = [{"images": np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    try:
        hewn.compile(model, "cpu", calib_data=calib, metric="boxes")
    except hewn.ConfigError as exc:
        assert "YOLO-style" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("metric='boxes' on a classifier was accepted")


def test_a_function_of_reference_and_outputs_is_the_budgeted_score(tmp_path):
    """metric=f(reference_outputs, outputs): int8 is held to it (here a score int8 cannot reach)."""
    model = _export(TinyDetect(), tmp_path)
    rng = np.random.default_rng(0)
    calib = [{"images": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(16)]
    calls = []

    def exact(ref, outs):
        calls.append(len(ref))
        return float(all(np.array_equal(r[0], o[0]) for r, o in zip(ref, outs)))

    result = hewn.compile(model, "cpu", calib_data=calib, metric=exact, quantize=hewn.QuantizeConfig(measure_speed=False))
    assert calls and "quantize" not in result.report["verification"].get("lossy_passes", [])
    assert all(c.get("task_score") == 0.0 for c in result.report["quantization"]["candidates"])
