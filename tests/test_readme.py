"""The README's Python blocks run as written (in order, in one namespace, in an empty folder), its
`bash` blocks run as written in an empty folder, its set-up block is what .ci/run does, and every
long-running `sh` command it documents answers --help."""
from __future__ import annotations

import json
import os
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
    assert (tmp_path / "resnet18.onnx").is_file() and (tmp_path / "resnet18.report.html").is_file()
    assert namespace["logits"].shape[0] == 4 and namespace["hidden"].shape[:2] == (3, 40)
    assert namespace["accuracy"] is not None and namespace["held_out"]
    assert namespace["result"].modified                                   # the pass example folded BatchNorm
    weights = namespace["small"].report["weights"]                        # the LLM example kept its perplexity budget
    assert weights["perplexity"] <= weights["limit"] and (tmp_path / "lm.onnx").is_file()
    assert not any(n.op_type == "BatchNormalization" for n in namespace["folded"].graph.node)


def test_hewn_command_answers_help():
    script = shutil.which("hewn") or str(Path(sys.executable).with_name("hewn"))
    for command in ([script, "--help"], [sys.executable, "-m", "hewn", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "compile" in done.stdout, done.stderr


def _fenced(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_bash_blocks_run_as_written(tmp_path):
    """Each line of each `bash` block, in order, in one empty folder, with the venv's commands."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HEWN_PROGRESS": "0"}
    blocks = _fenced("bash")
    assert blocks, "the README has no bash block"
    for block in blocks:
        for command in _commands(block):
            done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env,
                                  timeout=600)
            assert done.returncode == 0, f"README command failed: {command}\n{done.stdout[-1000:]}{done.stderr[-2000:]}"
    assert json.loads((tmp_path / "report.json").read_text())["outcome"]["summary"]


def test_readme_setup_block_is_what_ci_runs():
    setup = next(b for b in _fenced("sh") if "pip install" in b)
    ci = (ROOT / ".ci" / "run").read_text()
    ci = ci.replace("--quiet ", "")
    for command in _commands(setup):
        if command == "pip install -e .":  # what .[dev] installs too
            assert 'pip install -e ".[dev]"' in ci
        elif command.startswith("pip install"):
            assert f"python -m {command}" in ci, command
    assert "pytest" in _commands(setup)[-1] and ci.strip().endswith("python -m pytest")


def test_readme_long_commands_answer_help():
    for block in _fenced("sh"):
        for command in _commands(block):
            if command.startswith("python -m bench"):
                module = command.split()[2]
                done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0 and "usage" in done.stdout, (module, done.stderr[-500:])
