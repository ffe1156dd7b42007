"""The README's Python blocks run as written (in order, in one namespace, in an empty folder),
and the `hewn` command it documents answers --help."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        if "accuracy_budget=0.05" in block:  # the planner example measured its budget on the held-out set
            final = namespace["result"].report["plan"]["final"]
            assert final["samples"] == 8 and "metric" in final, final
    assert (tmp_path / "resnet20.onnx").is_file() and (tmp_path / "resnet20.report.html").is_file()
    assert namespace["accuracy"] is not None and namespace["held_out"]
    assert namespace["result"].modified                                   # the pass example folded BatchNorm
    assert not any(n.op_type == "BatchNormalization" for n in namespace["folded"].graph.node)


def test_hewn_command_answers_help():
    script = shutil.which("hewn") or str(Path(sys.executable).with_name("hewn"))
    for command in ([script, "--help"], [sys.executable, "-m", "hewn", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "compile" in done.stdout, done.stderr
