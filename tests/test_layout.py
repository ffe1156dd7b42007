"""The package layout: one import name, no import cycles, a cheap `import hewn`, short functions."""
from __future__ import annotations

import ast
import inspect
import json
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


# ---------------------------------------------------------------------------------------------
# lazy loading: one pass module loads what it imports, the registry and the configs load little


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _allowed(module: str, graph: nx.DiGraph) -> set[str]:
    """What `import module` may load: the module and what it imports (at the top or in a function:
    an over-approximation), transitively; the façade `hewn` and what it imports (a test keeps that
    cheap); and the parent packages of all of those, themselves only: a package's __init__ that
    imports more (hewn.passes building its registry eagerly) is what this is here to catch."""
    closure = {module, "hewn"} | nx.descendants(graph, module) | nx.descendants(graph, "hewn")
    return closure | {parent for name in closure for parent in _parents(name)}


_LOADED = ("import importlib, json, sys\n"
           "importlib.import_module({module!r})\n"
           "print(json.dumps(sorted(m for m in sys.modules if m == 'hewn' or m.startswith('hewn.'))))")


def _loaded(module: str) -> tuple[str, list[str] | str]:
    done = _python(_LOADED.format(module=module), ROOT)
    if done.returncode != 0:
        return module, (done.stderr.strip().splitlines() or ["failed"])[-1]
    return module, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_quant_module_loads_only_what_it_imports():
    """`import hewn.passes.quant.<module>` (weight_only/ too) in a fresh interpreter: every hewn
    module it loads is in the closure of its own import statements; hewn.passes builds nothing."""
    graph = _graph()
    modules = sorted(m for m, p in MODULES.items() if (ROOT / "passes" / "quant") in (p.parent, *p.parent.parents))
    assert "hewn.passes.quant.weight_only.block_quant" in modules
    failures = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for module, loaded in pool.map(_loaded, modules):
            if isinstance(loaded, str):
                failures.append(f"{module}: import failed: {loaded}")
                continue
            extra = sorted(set(loaded) - _allowed(module, graph))
            if extra:
                failures.append(f"{module} loads {len(extra)} hewn module(s) it does not import: {extra}")
    assert not failures, "\n".join(failures)


def test_the_config_classes_load_neither_torch_nor_onnxruntime(tmp_path):
    code = ("import sys, hewn\n"
            "for name in ['QuantizeConfig', 'PruneConfig', 'PlanConfig', 'SVDConfig', 'DistillConfig']:\n"
            "    getattr(hewn, name)()\n"
            "    heavy = [m for m in ('torch', 'onnxruntime', 'onnx_graphsurgeon') if m in sys.modules]\n"
            "    assert not heavy, f'hewn.{name} imported {heavy}'\n"
            "print('ok')")
    done = _python(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_registry_lists_names_without_importing_passes(tmp_path):
    code = ("import sys\n"
            "import hewn.passes as p\n"
            "names = sorted(p.REGISTRY)\n"
            "assert 'fold_constants' in names and 'quantize' in p.REGISTRY and 'nope' not in p.REGISTRY, names\n"
            "assert len(p.REGISTRY) == len(names) and set(p.REGISTRY.keys()) == set(names)\n"
            "loaded = [m for m in sys.modules if m.startswith('hewn.passes.')]\n"
            "assert not loaded, f'listing the registry imported {loaded}'\n"
            "cls = p.REGISTRY['fold_constants']\n"
            "assert cls.name == 'fold_constants' and cls is p.FoldConstants, cls\n"
            "others = [m for m in ('hewn.passes.quant.quantize', 'hewn.passes.prune.prune_channels') if m in sys.modules]\n"
            "assert not others, f'one lookup imported {others}'\n"
            "print('ok')")
    done = _python(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_every_registered_pass_is_named_as_its_key():
    """Imports every pass: each registry key is its class's `name`, defined where REGISTRY says;
    every name hewn.passes exports resolves, and an unknown one is an AttributeError."""
    import hewn.passes as p
    from hewn.core.pass_infra import Pass

    wrong = []
    for name in p.REGISTRY:
        cls = p.REGISTRY[name]
        module, _, attr = p.REGISTRY.path(name).partition(":")
        if not (isinstance(cls, type) and issubclass(cls, Pass)) or cls.name != name \
                or (cls.__module__, cls.__name__) != (module, attr):
            wrong.append(f"{name}: {cls!r} (name {getattr(cls, 'name', None)!r}, registered as {p.REGISTRY.path(name)})")
    assert not wrong, wrong
    assert dict(p.REGISTRY.items()) == {name: p.REGISTRY[name] for name in p.REGISTRY}
    assert all(getattr(p, name) is not None for name in p.__all__)
    assert set(p.__all__) <= set(dir(p))
    with pytest.raises(AttributeError):
        p.NoSuchPass


def _torch_importers() -> set[str]:
    """hewn modules that import torch themselves (at the top or inside functions). (transformers is
    not counted: text calibration loads a tokenizer with it, which needs no torch.)"""
    out = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n.split(".")[0] == "torch" for n in names):
                out.add(module)
    return out


# the causal-LM code that serves KV-cache ONNX files: none of it, nor anything it imports, may load torch
ONNX_ONLY_LLM = ("hewn.core.kv_cache", "hewn.frontends.kv_cache_onnx", "hewn.frontends.lm_text",
                 "hewn.passes.quant.weight_only", "hewn.passes.fusion.fuse_cached_attention",
                 "hewn.passes.fusion.fuse_rotary", "hewn.passes.fusion.fuse_gelu", "hewn.passes.fusion.match",
                 "hewn.passes.cleanup.reshape_targets")


def test_the_onnx_only_llm_code_never_imports_torch():
    graph, torch_users = _graph(), _torch_importers()
    for module in MODULES:
        if not module.startswith(ONNX_ONLY_LLM):
            continue
        reach = nx.descendants(graph, module) | {module}
        bad = sorted(reach & torch_users)
        assert not bad, f"{module} reaches torch through {bad}"


def _functions(path: Path):
    return [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]


def test_one_rewrite_ir_per_pass_kind():
    """ONNX rewrites are registered passes over onnx-graphsurgeon graphs (torch-side ones are
    TorchSteps over fx): no ModelProto -> (ModelProto, report) rewrite beside them, no function
    named like a registered pass, and a ModelProto -> ModelProto helper is private to its package."""
    from hewn.passes import REGISTRY

    for name in REGISTRY:
        source = inspect.getsource(REGISTRY[name].run)
        assert "graph: gs.Graph" in source.split(")")[0], f"{name}.run does not take an onnx-graphsurgeon Graph"
    graph, offenders = _graph(), []
    for module, path in MODULES.items():
        if not module.startswith("hewn.passes."):
            continue
        for fn in _functions(path):
            ret = ast.unparse(fn.returns) if fn.returns else ""
            first = ast.unparse(fn.args.args[0].annotation) if fn.args.args and fn.args.args[0].annotation else ""
            if fn.name in REGISTRY and ("ModelProto" in first or "Graph" in first):
                offenders.append(f"{module}.{fn.name}: a function named like the registered pass")
            if "ModelProto" in first and "ModelProto" in ret and "tuple" in ret:
                offenders.append(f"{module}.{fn.name}: a ModelProto rewrite with its own report, outside the manager")
            elif "ModelProto" in first and "ModelProto" in ret and not fn.name.startswith("_"):
                users = [m for m in graph.predecessors(module) if not m.startswith(_package(module))]
                if users:
                    offenders.append(f"{module}.{fn.name}: a ModelProto rewrite used outside its package by {users}")
    assert not offenders, offenders
