"""The package layout: one import name, no import cycles, a cheap `import hewn`, short functions."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder (setup.py maps the same)
FOLDERS = {"hewn": "compiler", "hewn.passes": "passes", "hewn.targets": "targets", "hewn.models": "models"}
OLD_NAMES = ("compiler", "passes", "targets", "models")
SOURCE_DIRS = ("compiler", "passes", "targets", "models", "bench", "tests")


def _modules() -> dict[str, Path]:
    """hewn module name -> file, for every .py file of the package folders."""
    out = {}
    for name, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


MODULES = _modules()


def _type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, module: str) -> set[str]:
    """Every hewn module `path` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node):
        if _type_checking(node):
            return
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in MODULES}


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for target in _imports(path, module):
            if target != module:
                graph.add_edge(module, target)
    return graph


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def test_no_file_level_import_cycles():
    graph = _graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles between files: {sorted(cycles, key=len)[:5]}"


def test_no_package_level_import_cycles():
    """Packages (hewn.core, hewn.passes.quant, ...) import each other in one direction only. The
    façade `hewn` and the registry `hewn.passes` sit on top: they import everything below them."""
    top = {"hewn", "hewn.passes"}
    packages = nx.DiGraph()
    for a, b in _graph().edges:
        pa, pb = _package(a), _package(b)
        if pa != pb and pa not in top and pb not in top:
            packages.add_edge(pa, pb)
    cycles = list(nx.simple_cycles(packages))
    assert not cycles, f"import cycles between packages: {cycles[:5]}"


def test_core_and_frontends_import_nothing_above_them():
    allowed = {"hewn.core": ("hewn.core",), "hewn.frontends": ("hewn.core", "hewn.frontends")}
    graph = _graph()
    for module in MODULES:
        for layer, ok in allowed.items():
            if module.startswith(layer + ".") or module == layer:
                bad = [t for t in graph.successors(module) if not t.startswith(ok)]
                assert not bad, f"{module} imports {bad}: {layer} must not depend on the layers above it"


def test_passes_do_not_import_the_driver_or_targets():
    graph = _graph()
    for module in MODULES:
        if module.startswith("hewn.passes."):
            bad = [t for t in graph.successors(module) if t.startswith(("hewn.driver", "hewn.targets", "hewn.cli"))
                   or t in ("hewn", "hewn.passes")]
            assert not bad, f"{module} imports {bad}"


OLD_IMPORT = re.compile(rf"^\s*(from|import)\s+({'|'.join(OLD_NAMES)})(\.|\s)", re.M)


def test_no_file_imports_the_old_top_level_names():
    """Not in code, and not in the scripts tests run in subprocesses (strings)."""
    offenders = []
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in OLD_IMPORT.finditer(text)]
    readme = (ROOT / "README.md").read_text()
    offenders += [f"README.md: {m.group(0).strip()}" for m in OLD_IMPORT.finditer(readme)]
    assert not offenders, offenders


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_hewn_is_cheap_and_old_names_are_gone(tmp_path):
    """From an unrelated folder: `import hewn` loads neither torch nor onnxruntime; the façade has
    the public names; the five generic top-level packages do not exist."""
    code = ("import sys, importlib.util, hewn\n"
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules, 'heavy import'\n"
            "for name in ['compiler', 'passes', 'targets', 'models', 'bench']:\n"
            "    assert importlib.util.find_spec(name) is None, name\n"
            "for name in [n for n in hewn.__all__ if n != 'distill']:  # distill is torch code\n"
            "    assert getattr(hewn, name) is not None, name\n"
            "assert 'torch' not in sys.modules, 'a configuration class imported torch'\n"
            "assert callable(hewn.distill)\n"
            "print('ok')")
    done = _python(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _import_alone(module: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return module, "" if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f"{m}: {err}" for m, err in pool.map(_import_alone, sorted(MODULES)) if err]
    assert not failures, failures


def test_no_function_is_longer_than_80_lines():
    long = []
    for folder in ("compiler", "passes", "targets", "models", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 80:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


@pytest.mark.slow
def test_the_wheel_holds_one_package_and_every_module(tmp_path):
    """`pip wheel --no-deps .`: the only top-level package is hewn, and no source file is left out
    (an explicit package list would silently drop a new subfolder)."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("hewn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hewn"}, tops
    expected = {"/".join(m.split(".")) + ("/__init__.py" if p.name == "__init__.py" else ".py")
                for m, p in MODULES.items()}
    assert expected - set(names) == set(), sorted(expected - set(names))[:10]
    assert "hewn/models/data/sentences.txt" in names
