"""The save protocol (issue 26, class 3): killed at any step over an earlier build, the output is
the old build or the new one, whole, or absent; never a model reading another build's data.
SIGTERM unwinds like an error: the old files are put back and no staging or temp folder is left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest


CHILD = textwrap.dedent('''
    import json, os, shutil, signal, sys
    from pathlib import Path
    import hewn
    import hewn.core.storage as storage
    import hewn.core.external as external

    src_b, out, pristine, snapshots, how = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    result = hewn.compile(str(src_b), "cpu", measure_latency=False)
    steps = [("os", "replace"), ("os", "link"), ("storage", "_stage_texts"), ("external", "write"),
             ("onnx", "save_model")]
    owners = {"os": os, "storage": storage, "external": external, "onnx": storage.onnx}
    k, finished = 0, False
    while not finished:
        pid = os.fork()
        if pid == 0:   # the save, stopped at its k-th step
            count = [0]
            for owner, name in steps:
                real = getattr(owners[owner], name)
                def wrapped(*a, _real=real, **kw):
                    count[0] += 1
                    if count[0] == k + 1:
                        if how == "kill":
                            os._exit(137)
                        os.kill(os.getpid(), signal.SIGTERM)
                    return _real(*a, **kw)
                setattr(owners[owner], name, wrapped)
            from hewn.core.interrupt import signals_unwind
            try:
                with signals_unwind():
                    result.save(out)
            except KeyboardInterrupt:
                os._exit(143)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        finished = code == 0
        shutil.copytree(out.parent, snapshots / f"{k:02d}-{code}")
        shutil.rmtree(out.parent)
        shutil.copytree(pristine, out.parent)
        k += 1
    print(json.dumps(k))
''')


def _model(scale: float) -> onnx.ModelProto:
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 64] x) => (float[1, 64] y) { y = MatMul(x, w) }""")
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32) * scale
    model.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    return model


def _external(folder, scale):
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(_model(scale), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    return path


def _outputs(folder):
    x = np.ones((1, 64), np.float32)
    path = folder / "out.onnx"
    if not path.exists():
        return None
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("how", ["kill", "sigterm"])
def test_a_save_stopped_at_any_step_leaves_one_whole_build(tmp_path, how):
    import hewn

    src_a, src_b = _external(tmp_path / "a", 1.0), _external(tmp_path / "b", 2.0)
    out = tmp_path / "out" / "out.onnx"
    out.parent.mkdir()
    hewn.compile(str(src_a), "cpu", measure_latency=False).save(out)   # the earlier build
    pristine = tmp_path / "pristine"
    import shutil

    shutil.copytree(out.parent, pristine)
    old_report = (pristine / "out.report.json").read_text()
    b = tmp_path / "b-built"
    b.mkdir()
    hewn.compile(str(src_b), "cpu", measure_latency=False).save(b / "out.onnx")
    expected = {"old": _outputs(pristine), "new": _outputs(b)}
    assert not np.allclose(expected["old"], expected["new"])
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    run = subprocess.run([sys.executable, "-c", CHILD, str(src_b), str(out), str(pristine), str(snapshots), how],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    steps = json.loads(run.stdout.strip().splitlines()[-1])
    assert steps >= 8   # the staging writes, the backups and every rename were each a stopping point
    seen = set()
    for snap in sorted(snapshots.iterdir()):
        got = _outputs(snap)
        which = [k for k, v in expected.items() if got is not None and np.array_equal(got, v)]
        assert got is None or which, f"{snap.name}: the output computes neither build"
        seen.update(which)
        names = sorted(p.name for p in snap.iterdir())
        assert not [n for n in names if n.startswith(".hewn-")] or how == "kill", f"{snap.name}: staging left: {names}"
        data = [n for n in names if n.endswith(".data")]
        if how == "sigterm" and not snap.name.endswith("-0"):   # unwound: the old build, reports included
            assert which == ["old"] and (snap / "out.report.json").read_text() == old_report, snap.name
            assert len(data) == 1, names   # the new data file went with the rollback
        if snap.name.endswith("-0"):       # the save that ran to the end: the new build only
            assert which == ["new"] and len(data) == 1 and not [n for n in names if n.startswith(".hewn-")], names
    assert seen == {"old", "new"}


ENDLESS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1] x) => (float[1] y) {
    n = Constant <value = int64 {1000000000000}> ()
    t = Constant <value = bool {1}> ()
    y = Loop (n, t, x) <body = b (int64 i, bool c, float[1] a) => (bool co, float[1] ao) {
        co = Identity(c)
        one = Constant <value = float {1}> ()
        ao = Add(a, one)
    }>
}"""


def test_sigterm_during_a_compile_leaves_no_temp_files(tmp_path):
    """`timeout` / `docker stop` while hewn compiles (here: inside an ORT run that would go on for
    the whole time limit): exit 143 with one line, no staging or temp folder left."""
    from tests.helpers import parse

    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    src = tmp_path / "m.onnx"
    onnx.save(parse(ENDLESS), str(src))
    env = {**os.environ, "TMPDIR": str(tmp), "HEWN_RUN_TIMEOUT_S": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "hewn", "compile", str(src), "-o", str(out / "o.onnx")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - started < 30
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("hewn: terminated by SIGTERM"), err
    assert [p.name for p in tmp.iterdir() if "hewn" in p.name] == [] and list(out.iterdir()) == []
    # (ONNX Runtime 1.32 itself leaves a small `.ses` session-id file in TMPDIR)
