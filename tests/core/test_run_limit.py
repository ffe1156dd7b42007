"""Every ORT run inside compile has a time limit: a Loop whose trip count comes from the data
made compile hang forever (and Ctrl-C did nothing: ORT is inside C++)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import hewn
from hewn import RunTimeoutError
from tests.helpers import parse

ENDLESS = """<ir_version: 8, opset_import: ["" : 17]>
g (int64 n, float[1] x) => (float[1] y) {
    t = Constant <value = bool {1}> ()
    y = Loop (n, t, x) <body = b (int64 i, bool c, float[1] a) => (bool co, float[1] ao) {
        co = Identity(c)
        one = Constant <value = float {1}> ()
        ao = Add(a, one)
    }>
}"""


def test_a_run_that_does_not_end_is_stopped_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HEWN_RUN_TIMEOUT_S", "1")
    started = time.monotonic()
    with pytest.raises(RunTimeoutError, match=r"did not finish running the model within 1 s on inputs \[n \(\), x \(1,\)\]"):
        hewn.compile(parse(ENDLESS), example_inputs={"n": np.array(10 ** 12), "x": np.zeros(1, np.float32)})
    assert time.monotonic() - started < 30


def test_the_same_model_compiles_on_real_inputs(monkeypatch):
    monkeypatch.setenv("HEWN_RUN_TIMEOUT_S", "5")
    result = hewn.compile(parse(ENDLESS), example_inputs={"n": np.array(3), "x": np.zeros(1, np.float32)})
    assert result.session().run(None, {"n": np.array(3), "x": np.zeros(1, np.float32)})[0][0] == 3.0


@pytest.mark.parametrize("value", ["nan", "abc", "0", "-5", "inf"])
def test_a_bad_limit_is_refused_before_any_work(monkeypatch, value):
    """(issue 26, class 7) HEWN_RUN_TIMEOUT_S=nan turned the limit off silently; =abc was blamed on the model."""
    monkeypatch.setenv("HEWN_RUN_TIMEOUT_S", value)
    with pytest.raises(hewn.ConfigError, match="HEWN_RUN_TIMEOUT_S"):
        hewn.compile(parse(ENDLESS), example_inputs={"n": np.array(3), "x": np.zeros(1, np.float32)})


ENDLESS_CONST = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1] x) => (float[1] y) {
    n = Constant <value = int64 {1000000000000}> ()
    t = Constant <value = bool {1}> ()
    y = Loop (n, t, x) <body = b (int64 i, bool c, float[1] a) => (bool co, float[1] ao) {
        co = Identity(c)
        one = Constant <value = float {1}> ()
        ao = Add(a, one)
    }>
}"""


def test_hewn_bench_stops_a_run_that_does_not_end(tmp_path):
    """`hewn bench` (and every timing loop: latency, kernel costs, decoder timing) has the limit too."""
    import os
    import subprocess
    import sys

    import onnx

    path = tmp_path / "endless.onnx"
    onnx.save(parse(ENDLESS_CONST), str(path))
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "hewn", "bench", str(path), "--compiled", str(path), "--runs", "3"],
                         env={**os.environ, "HEWN_RUN_TIMEOUT_S": "2"}, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("hewn:")]
    assert len(lines) == 1 and "did not finish" in lines[0], run.stderr


def test_timing_loops_keep_the_limit_without_a_thread_per_run(monkeypatch):
    from hewn.core.runtime import make_session, timings, watched

    monkeypatch.setenv("HEWN_RUN_TIMEOUT_S", "1")
    session = make_session(parse(ENDLESS_CONST))
    feed = {"x": np.zeros(1, np.float32)}
    for call in (lambda: timings([session], feed, 3), lambda: watched(session, None, feed)):
        started = time.monotonic()
        with pytest.raises(RunTimeoutError):
            call()
        assert time.monotonic() - started < 30
