"""Streaming histograms and range estimators agree with hand-computed ranges; calibration errors
name the sample and the input; memory does not grow with the number of samples."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hewn.core.errors import InputMismatchError
from hewn.core.ir import to_graph
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs
from hewn.passes.quant.calibrate import Calibrate, CalibrationData
from hewn.passes.quant.histogram import (ESTIMATORS, StreamingHistogram, entropy_range, mse_range, percentile_range)
from hewn.passes.quant.spec import S8_SYM, U8, W7, QuantSpec
from hewn.targets import CPU
from tests.helpers import parse

RELU = """<ir_version: 8, opset_import: ["" : 17]> g (float[1, 4] x) => (float[1, 4] y) { y = Relu(x) }"""


def test_histogram_is_exact_after_merges():
    rng = np.random.default_rng(0)
    h = StreamingHistogram(max_bins=256)
    data = [rng.standard_normal(5000) * (1 + 3 * i) for i in range(10)]  # range grows: bins merge
    for d in data:
        h.update(d)
    everything = np.concatenate(data)
    assert h.counts.sum() == everything.size and len(h.counts) <= 256
    assert (h.min, h.max) == (pytest.approx(everything.min()), pytest.approx(everything.max()))
    # every value lies in the bin the histogram says
    ks = np.floor(everything / h.width).astype(int) - h.first
    assert np.array_equal(np.bincount(ks, minlength=len(h.counts)), h.counts)


def test_percentile_matches_numpy():
    x = np.random.default_rng(1).standard_normal(400_000)
    h = StreamingHistogram()
    h.update(x)
    lo, hi = percentile_range(h, QuantSpec("int8"), percentile=99.0)
    want_lo, want_hi = np.percentile(x, [0.5, 99.5])
    assert abs(lo - want_lo) < 2 * h.width and abs(hi - want_hi) < 2 * h.width


def test_minmax_and_clipping_estimators_on_known_distributions():
    rng = np.random.default_rng(2)
    x = rng.laplace(size=200_000).astype(np.float32)
    h = StreamingHistogram()
    h.update(x)
    assert ESTIMATORS["minmax"](h, S8_SYM) == (x.min(), x.max())
    for estimator in (entropy_range, mse_range):
        lo, hi = estimator(h, S8_SYM)
        # heavy tails get clipped, but not into the body of the distribution
        assert 3.0 < hi < x.max() and x.min() < lo < -3.0, estimator.__name__
    relu = np.maximum(rng.standard_normal(100_000), 0)
    h = StreamingHistogram()
    h.update(relu)
    lo, hi = entropy_range(h, U8)
    assert lo == 0.0 and 2.5 < hi <= relu.max()


def test_mse_clipping_lowers_the_error_it_minimizes():
    x = np.random.default_rng(3).laplace(size=100_000).astype(np.float32)
    h = StreamingHistogram()
    h.update(x)

    def qdq_mse(lo, hi):
        scale, zero = S8_SYM.params(lo, hi)
        q = S8_SYM.quantize(x, scale, zero)
        return float(np.mean((x - (q.astype(np.float32) - zero) * scale) ** 2))

    assert qdq_mse(*mse_range(h, S8_SYM)) < qdq_mse(x.min(), x.max())


def test_quant_params_hand_computed():
    scale, zero = U8.params(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zero == 64
    scale, zero = W7.params(np.array([-2.0, -0.5]), np.array([1.0, 0.25]))
    np.testing.assert_allclose(scale, [2 / 64, 0.5 / 64])
    assert zero.dtype == np.int8 and not zero.any()
    # a zero range gets a safe scale, never a division by zero
    scale, zero = U8.params(0.0, 0.0)
    assert scale == 1.0 and zero == 0
    assert np.all(np.isfinite(U8.quantize(np.zeros(3), scale, zero)))


def _relu_ctx(samples):
    model = parse(RELU)
    return to_graph(model), Context(CPU, calibration=CalibrationData(samples, input_specs(model)))


def test_calibrate_collects_every_float_activation():
    graph, ctx = _relu_ctx([{"x": np.array([[-1, 0, 2, 5]], np.float32)}, {"x": np.array([[3, 1, 1, 1]], np.float32)}])
    cal = ctx.analysis(Calibrate, graph)
    assert cal.samples == 2 and set(cal.histograms) == {"x", "y"}
    assert cal.range("y", U8) == (0.0, 5.0) and cal.range("x", U8) == (-1.0, 5.0)


@pytest.mark.parametrize("samples, match", [
    ([], "calib_data is empty"),
    ([{"x": np.zeros((1, 5), np.float32)}], r"calib_data\[0\]: input 'x' has shape \[1, 5\]"),
    ([{"z": np.zeros((1, 4), np.float32)}], r"input names \['z'\] are not model inputs"),
    ([{"x": np.zeros((1, 4), np.float32)}, {"x": np.array([[1, np.nan, 0, 0]], np.float32)}],
     r"calib_data\[1\]: input 'x' contains NaN"),
    ([{"x": np.zeros((1, 4), np.int64)}], "has dtype int64, the model expects float32"),
])
def test_bad_calibration_data_names_the_sample(samples, match):
    graph, ctx = _relu_ctx(samples)
    with pytest.raises(InputMismatchError, match=match):
        ctx.analysis(Calibrate, graph)


def test_overflow_in_activations_names_the_tensor():
    model = parse("""<ir_version: 8, opset_import: ["" : 17]> g (float[1, 2] x) => (float[1, 2] y) {
        big = Constant <value = float[1] {3e38}> ()
        h = Mul(x, big)
        y = Add(h, h) }""")
    from hewn.passes import InsertQDQ

    ctx = Context(CPU, calibration=CalibrationData([{"x": np.array([[10.0, 1.0]], np.float32)}], input_specs(model)))
    with pytest.raises(InputMismatchError, match=r"calibration sample 0 produces \+Inf/NaN in tensor 'h'"):
        InsertQDQ().run(to_graph(model), ctx)


def test_one_shot_iterator_is_refused():
    with pytest.raises(InputMismatchError, match="one-shot iterator"):
        CalibrationData(iter([]), [])


PEAK = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from hewn.core.ir import to_graph
    from hewn.core.pass_infra import Context
    from hewn.core.runtime import input_specs
    from hewn.passes.quant.calibrate import Calibrate, CalibrationData
    from hewn.models import REFERENCE_MODELS
    from hewn.frontends.from_torch import capture, export_onnx
    from hewn.targets import CPU
    model, inputs = REFERENCE_MODELS["resnet20"]()
    onnx_model = export_onnx(capture(model, inputs), 17)
    n = int(sys.argv[1])
    def samples():  # a generator function: the samples are never all in memory
        rng = np.random.default_rng(0)
        for _ in range(n):
            yield {"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ctx = Context(CPU, calibration=CalibrationData(samples, input_specs(onnx_model)))
    cal = ctx.analysis(Calibrate, to_graph(onnx_model))
    assert cal.samples == n
    from hewn.core.memory import peak_rss_bytes
    print(peak_rss_bytes() // 1024)
""")


def test_calibration_memory_does_not_grow_with_samples():
    def peak(n):
        out = subprocess.run([sys.executable, "-c", PEAK, str(n)], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    small, large = peak(100), peak(1000)
    assert large <= 1.5 * small, (small, large)
