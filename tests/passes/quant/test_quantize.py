"""compile(..., calib_data=...) quantizes: the measured scheme choice, accuracy on real data,
mixed precision under a tight budget, refusal of slower int8, bad arguments."""
import numpy as np
import pytest
import torch

from hewn import compile
from hewn.core.errors import ConfigError, InputMismatchError
from hewn.passes.quant.quantize import QuantizeConfig


@pytest.fixture(scope="module")
def digits():
    from hewn.models.digits import digits_cnn

    return digits_cnn()


def _accuracy(session, data):
    pred = [session.run(None, {"x": data.x_test[i:i + 1]})[0].argmax() for i in range(len(data.x_test))]
    return float((np.array(pred) == data.y_test).mean())


def test_digits_int8_keeps_accuracy_and_runs_in_integer_kernels(digits, tmp_path):
    model, data = digits
    calib = [(data.x_train[i:i + 1],) for i in range(200)]
    example = (torch.from_numpy(data.x_test[:1]),)
    fp32 = compile(model, "cpu", example_inputs=example)
    result = compile(model, "cpu", example_inputs=example, calib_data=calib, output=tmp_path / "q.onnx")
    q = result.report["quantization"]
    if "chosen" not in q:  # int8 measured slower than float on this machine: kept float, said so
        assert "kept_float" in q and result.report["left_intact"]
        return
    assert q["int8_coverage"]["coverage"] >= 0.9
    assert abs(_accuracy(result.session(), data) - _accuracy(fp32.session(), data)) <= 0.003
    assert result.report["verification"]["lossy_passes"] == ["quantize"]
    assert {row["precision"] for row in q["layers"]} == {"int8"} and all(r["sqnr_db"] > 15 for r in q["layers"])
    assert (tmp_path / "q.onnx").stat().st_size < 0.4 * len(fp32.onnx.SerializeToString())


def test_tight_budget_moves_sensitive_layers_to_float():
    from hewn.models import REFERENCE_MODELS

    model, inputs = REFERENCE_MODELS["resnet20"]()
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((1, 3, 32, 32)).astype(np.float32),) for _ in range(16)]
    config = QuantizeConfig(schemes=("static_u8s8_reduced",), budget=2e-5, measure_speed=False, bias_correction=False)
    result = compile(model, "cpu", example_inputs=inputs, calib_data=calib, quantize=config)
    q = result.report["quantization"]
    mixed = q["mixed_precision"]
    assert mixed["sensitivity"] and "layers kept in float" in mixed["result"] or "not met" in mixed["result"]
    if "chosen" in q:
        assert q["chosen"]["float_layers"] == len(mixed["float_layers"]) > 0
        assert result.report["verification"]["mean_cosine"] >= 1 - 2e-5 - 1e-6
        floats = {r["node"] for r in q["layers"] if r["precision"] == "float"}
        assert floats == set(mixed["float_layers"])


def test_untimed_targets_are_deterministic():
    from hewn.models import REFERENCE_MODELS

    model, inputs = REFERENCE_MODELS["resnet20"]()
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((1, 3, 32, 32)).astype(np.float32),) for _ in range(4)]
    a = compile(model, "mobile", example_inputs=inputs, calib_data=calib)
    b = compile(model, "mobile", example_inputs=inputs, calib_data=calib)
    assert a.report["quantization"]["chosen"]["scheme"] == "static_s8s8"
    assert a.onnx.SerializeToString() == b.onnx.SerializeToString()


def test_int8_that_is_not_faster_is_refused(digits):
    model, data = digits
    calib = [(data.x_train[i:i + 1],) for i in range(8)]
    config = QuantizeConfig(schemes=("static_s8s8",), min_speedup=100.0)
    result = compile(model, "cpu", example_inputs=(torch.from_numpy(data.x_test[:1]),), calib_data=calib,
                     quantize=config)
    assert "int8 not faster" in result.report["quantization"]["kept_float"]
    assert not any(n.op_type == "QuantizeLinear" for n in result.onnx.graph.node)
    assert "verification" in result.report and "rtol" in result.report["verification"]  # lossless again


def test_quantization_arguments_are_checked(digits):
    model, data = digits
    example = (torch.from_numpy(data.x_test[:1]),)
    with pytest.raises(ConfigError, match="quantize= needs calib_data="):
        compile(model, "cpu", example_inputs=example, quantize=True)
    with pytest.raises(ConfigError, match="accuracy_budget= takes a float"):
        compile(model, "cpu", example_inputs=example, calib_data=[(data.x_train[:1],)], accuracy_budget="1%")
    with pytest.raises(ConfigError, match="unknown quantization scheme"):
        compile(model, "cpu", example_inputs=example, calib_data=[(data.x_train[:1],)],
                quantize=QuantizeConfig(schemes=("int4",)))
    with pytest.raises(InputMismatchError, match="calib_data is empty"):
        compile(model, "cpu", example_inputs=example, calib_data=[])
    with pytest.raises(InputMismatchError, match=r"calib_data\[0\]: input 'x' has shape"):
        compile(model, "cpu", example_inputs=example, calib_data=[(np.zeros((1, 1, 9, 9), np.float32),)])


def test_graph_outputs_stay_float_so_a_mixed_range_output_keeps_its_small_channels():
    """Concat([boxes in pixels, scores in 0..1]) as the graph output (YOLOv8's head): one int8 scale
    over both rounded every score to zero."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w_box = numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 100).astype(np.float32), "w_box")
    w_cls = numpy_helper.from_array(rng.standard_normal((3, 8, 1, 1)).astype(np.float32), "w_cls")
    nodes = [helper.make_node("Conv", ["x", "w_box"], ["box"]), helper.make_node("Conv", ["x", "w_cls"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["score"]), helper.make_node("Concat", ["box", "score"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 7, 6, 6])], [w_box, w_cls])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    calib = [{"x": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)} for _ in range(8)]
    config = QuantizeConfig(schemes=("static_u8s8_reduced",), budget=0.5, measure_speed=False)
    result = compile(model, "cpu", calib_data=calib, quantize=config, measure_latency=False)
    producer = {o: n.op_type for n in result.onnx.graph.node for o in n.output}
    assert producer["y"] == "Concat"                  # no Q/DQ on the graph output
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = result.session().run(None, {"x": x})[0]
    scores, got_scores = ref[:, 4:], got[:, 4:]
    assert np.linalg.norm(got_scores - scores) / np.linalg.norm(scores) < 0.1
