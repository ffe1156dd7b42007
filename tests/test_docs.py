"""README.md and every docs/*.md page run as written.

README's `python` blocks run in order in one namespace in an empty folder; each docs page's
`python` blocks run in order in a fresh namespace of their own, in an empty folder of their own.
Each line of each `bash` block runs in an empty folder (one per page) with the venv's commands on
PATH. `sh` blocks are not run (too long, or they need a download): the set-up block must be what
.ci/run does, and every `python -m bench...` command in one must answer --help. README stays a
front page (at most 250 lines), links resolve, and no page states a test count (CI prints it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]


def _fenced(kind: str, page: Path = README) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", page.read_text(), re.S)


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _run_python(page: Path, tmp_path: Path, monkeypatch) -> dict:
    """Every python block of `page`, in order, in one fresh namespace, in the empty `tmp_path`."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": page.stem.lower()}
    for i, block in enumerate(_fenced("python", page)):
        exec(compile(block, f"{_name(page)} python block {i}", "exec"), namespace)
        if "accuracy_budget=0.05" in block:  # the planner example measured its budget on the held-out set
            final = namespace["result"].report["plan"]["final"]
            assert final["samples"] == 8 and "metric" in final, final
    return namespace


def _check_lm(ns: dict, folder: Path) -> None:
    weights = ns["small"].report["weights"]                               # the LLM example kept its perplexity budget
    assert weights["perplexity"] <= weights["limit"] and (folder / "lm.onnx").is_file()
    assert ns["new"].shape == (1, 16) and ns["new"].dtype.kind == "i"     # it generated 16 tokens with the cache


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    assert len(_fenced("python")) >= 3     # a CNN, a Hugging Face encoder, a causal LM
    ns = _run_python(README, tmp_path, monkeypatch)
    assert (tmp_path / "resnet18.onnx").is_file() and (tmp_path / "resnet18.report.html").is_file()
    assert ns["logits"].shape[0] == 4 and ns["hidden"].shape[:2] == (3, 40)
    _check_lm(ns, tmp_path)


def _planner(ns: dict, folder: Path) -> None:
    """The planner example meets its budget on the held-out samples, and its outcome says so in the metric."""
    report = ns["result"].report
    final = report["plan"]["final"]
    assert final["budget_met"] and final["error"] <= 0.05, final
    assert report["quality"]["metric"] == "metric=" and "metric=" in report["outcome"]["summary"]


def _architecture(ns: dict, folder: Path) -> None:
    assert ns["result"].modified                                          # the pass example folded BatchNorm
    assert not any(n.op_type == "BatchNormalization" for n in ns["folded"].graph.node)


def _llm(ns: dict, folder: Path) -> None:
    _check_lm(ns, folder)
    assert len(ns["sizes"]) == 3 and ns["same"]["equal"]                 # the export matched transformers
    assert ns["shorter"].config.num_hidden_layers == 2 and (folder / "float.onnx").is_file()


def _pruning(ns: dict, folder: Path) -> None:
    """The pruning example's first compile loses what its comment says, and says so."""
    assert ns["pruned"] is not None
    first = ns["result"].report
    assert first["pruning"]["layers"] and first["outcome"]["summary"].startswith("QUALITY LOST")
    assert first["quality"]["error"] > 0.05 and "cosine" in first["outcome"]["summary"]


def _quantization(ns: dict, folder: Path) -> None:
    assert ns["result"].report["quantization"] and (folder / "resnet20.onnx").is_file()


# what each docs page's python blocks must have produced, beyond running
CHECKS = {"planner.md": _planner, "architecture.md": _architecture, "llm.md": _llm, "pruning.md": _pruning,
          "quantization.md": _quantization}


@pytest.mark.parametrize("page", [p.name for p in DOCS if _fenced("python", p)])
def test_docs_python_blocks_run_as_written(page, tmp_path, monkeypatch):
    ns = _run_python(ROOT / "docs" / page, tmp_path, monkeypatch)
    if page in CHECKS:
        CHECKS[page](ns, tmp_path)


def test_checked_pages_have_python_blocks():
    for page in CHECKS:
        assert _fenced("python", ROOT / "docs" / page), f"docs/{page} lost the python blocks its checks are for"


def test_hewn_command_answers_help():
    script = shutil.which("hewn") or str(Path(sys.executable).with_name("hewn"))
    for command in ([script, "--help"], [sys.executable, "-m", "hewn", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "compile" in done.stdout, done.stderr


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


# pages whose bash blocks write report.json (hewn compile --json)
REPORTS = {"README.md", "cli.md"}


@pytest.mark.parametrize("page", [_name(p) for p in PAGES if _fenced("bash", p)])
def test_bash_blocks_run_as_written(page, tmp_path):
    """Each line of each `bash` block of the page, in order, in one empty folder, with the venv's commands."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HEWN_PROGRESS": "0"}
    for block in _fenced("bash", ROOT / page):
        for command in _commands(block):
            done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env,
                                  timeout=600)
            assert done.returncode == 0, f"{page} command failed: {command}\n{done.stdout[-1000:]}{done.stderr[-2000:]}"
    if Path(page).name in REPORTS:
        assert json.loads((tmp_path / "report.json").read_text())["outcome"]["summary"]


def test_readme_and_cli_page_have_bash_blocks():
    assert _fenced("bash"), "the README has no bash block"
    assert _fenced("bash", ROOT / "docs" / "cli.md"), "docs/cli.md has no bash block"


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


def test_long_commands_answer_help():
    """Every `python -m bench...` line of an `sh` block of any page (each module once)."""
    modules = {command.split()[2] for page in PAGES for block in _fenced("sh", page) for command in _commands(block)
               if command.startswith("python -m bench")}
    assert modules, "no page documents the benchmark commands"
    for module in sorted(modules):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage" in done.stdout, (module, done.stderr[-500:])


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail to docs/"


TEST_COUNT = re.compile(r"\b\d[\d,]* tests\b")


def test_no_page_states_a_test_count():
    """The suite's size and time change with every commit; CI prints them."""
    offenders = [f"{_name(p)}:{i}: {line.strip()}" for p in PAGES
                 for i, line in enumerate(p.read_text().splitlines(), 1) if TEST_COUNT.search(line)]
    assert not offenders, offenders


OLD_MODULES = re.compile(r"hewn\.llm\b|hewn\.passes\.quant\.(block_quant|gptq)\b|\bllm/(decode|verify|detect|weights|"
                         r"kernels|fuse|structure)\.py")


def test_no_page_names_a_moved_module():
    offenders = [f"{_name(p)}:{i}: {m.group(0)}" for p in PAGES
                 for i, line in enumerate(p.read_text().splitlines(), 1) for m in OLD_MODULES.finditer(line)]
    assert not offenders, offenders


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_links_resolve_and_the_index_lists_every_page():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{_name(page)} -> {target}")
    assert not broken, broken
    index = (ROOT / "docs" / "index.md").read_text()
    assert not [p.name for p in DOCS if p.name != "index.md" and f"]({p.name})" not in index]
    assert "](docs/index.md)" in README.read_text()


def test_every_test_a_page_cites_exists():
    """The reliability page names the test holding each guarantee: a renamed or deleted test must
    not leave a guarantee citing nothing."""
    root = README.parent
    sources = {p: p.read_text() for p in (root / "tests").rglob("test_*.py")}
    defined = {m for text in sources.values() for m in re.findall(r"^def (test_\w+)", text, re.M)}
    for page in [README, *sorted((root / "docs").glob("*.md"))]:
        text = page.read_text()
        for path in re.findall(r"`(tests/[\w/]+\.py)`", text):
            assert (root / path).is_file(), f"{page.name} cites {path}, which does not exist"
        for name in re.findall(r"`(test_\w+)`", text):
            assert name in defined, f"{page.name} cites {name}, which no test file defines"


def test_every_config_field_is_documented():
    import dataclasses

    import hewn

    text = (ROOT / "docs" / "compile.md").read_text()
    for config in (hewn.QuantizeConfig, hewn.PruneConfig, hewn.PlanConfig, hewn.SVDConfig, hewn.DistillConfig):
        section = text.split(f"`hewn.{config.__name__}`", 1)
        assert len(section) == 2, f"docs/compile.md has no table for {config.__name__}"
        table = section[1].split("\n\n`hewn.", 1)[0]
        missing = [f.name for f in dataclasses.fields(config) if f"| `{f.name}` |" not in table]
        assert not missing, f"{config.__name__} fields without a line in docs/compile.md: {missing}"
