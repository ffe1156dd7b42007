"""Progress on the CLI: shown for long steps when stderr is a terminal (driven here through a
pseudo-terminal), never under --json, never when the output is not a terminal."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import numpy as np
import onnx
import pytest

from hewn.models.zoo import light_models, with_random_weights


def _model_and_calib(tmp_path):
    src = tmp_path / "squeezenet.onnx"
    onnx.save(with_random_weights(onnx.load(str(light_models()["squeezenet"]))), str(src))
    calib = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, data_0=rng.standard_normal((4, 3, 224, 224)).astype(np.float32))
    return src, calib


def _run_in_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run `python -m hewn args` with stdout and stderr on a pseudo-terminal; (exit code, all output)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "hewn", *args], stdin=child, stdout=child, stderr=child,
                            env=env, close_fds=True)
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=600)
    os.close(main)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_cli_shows_progress_in_a_terminal_and_none_under_json(tmp_path):
    src, calib = _model_and_calib(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HEWN_PROGRESS"}
    env["HEWN_PROGRESS_AFTER"] = "0"   # announce every step at once: the test does not wait for slow ones
    code, text = _run_in_terminal(["compile", str(src), "-o", str(tmp_path / "int8.onnx"), "--calib", str(calib)], env)
    assert code == 0, text[-2000:]
    for step in ("hewn: frontend ...", "hewn calibration", "hewn: pass quantize ...", "hewn: verification done in"):
        assert step in text, f"no '{step}' progress in:\n{text[-3000:]}"
    assert "result:" in text

    code, text = _run_in_terminal(["compile", str(src), "-o", str(tmp_path / "j.onnx"), "--calib", str(calib),
                                   "--json"], env)
    assert code == 0
    assert "hewn:" not in text and "hewn calibration" not in text
    assert json.loads(text[text.index("{"):])["outcome"]["summary"]


def test_no_progress_when_not_a_terminal(tmp_path):
    src, _ = _model_and_calib(tmp_path)
    env = {**os.environ, "HEWN_PROGRESS_AFTER": "0"}
    env.pop("HEWN_PROGRESS", None)
    done = subprocess.run([sys.executable, "-m", "hewn", "compile", str(src), "-o", str(tmp_path / "o.onnx")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "nothing applied pays" in done.stdout and "--calib" in done.stdout
