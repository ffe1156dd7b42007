"""Atomic, never-overwrite-the-input saving of models and reports."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import onnx

from hewn.core import external
from hewn.core.errors import ConfigError
from hewn.core.ir import EXTERNAL_DATA_THRESHOLD


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(paths, protect=()) -> None:
    """Refuse before anything is written: an output that is one of the input's files (the model or
    a data file it refers to, however it is spelled: links, relative paths); an existing output that
    is not a regular file (a device such as /dev/null, a folder, a pipe); a folder that does not
    exist or cannot be written."""
    for path in map(Path, paths):
        for guarded in map(Path, protect):
            if _same_file(path, guarded) or path.resolve() == guarded.resolve():
                raise ConfigError(f"refusing to overwrite the input model's file {guarded} (the output {path}); "
                                  f"choose another output path")
        if (path.exists() or path.is_symlink()) and not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file (a device, pipe or broken link)"
            raise ConfigError(f"refusing to write {path}: it exists and is {kind}; give the path of a file")
        if not path.parent.is_dir():
            raise ConfigError(f"cannot write {path}: folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write {path}: folder {path.parent} is not writable")


def data_path(path: Path) -> Path:
    """The conventional data-file name for `path` (refused as an output when it is an input's file)."""
    return path.with_name(path.name + ".data")


def data_files_of(path: Path) -> list[Path]:
    """The data files hewn writes for the model at `path`: `<name>.data` and `<name>.<hash>.data`."""
    pattern = re.compile(re.escape(path.name) + r"(\.[0-9a-f]{16})?\.data")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:
        return []


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, protect: tuple[Path, ...] = (),
               external_data: bool | None = None, texts: dict | None = None) -> Path:
    """Write `model` to `path` (and `texts`, {path: text}, beside it: its reports) as one build.

    Models over ~1.8 GB, models whose weights are on disk (external data), or external_data=True
    get their weights in `<name>.<hash of its bytes>.data` beside it, streamed one tensor at a time:
    a data file no earlier build reads, so saving over one never changes what it computes.
    Everything is staged in a folder beside `path` and moved into place by `commit`.
    `protect` lists files that must never be overwritten (the user's input model and its data).
    """
    path = Path(path)
    texts = {Path(k): v for k, v in (texts or {}).items()}
    check_outputs([path, data_path(path), *texts], protect)
    if external_data is None:
        external_data = external.has_external(model) or model.ByteSize() >= EXTERNAL_DATA_THRESHOLD
    with _staging(path.parent) as tmp:
        staged = {}
        if external_data:
            data_name = external.write(model, tmp / path.name, path.name + ".data", name_by_content=True)
            check_outputs([path.parent / data_name], protect)
            staged[path.parent / data_name] = tmp / data_name
        else:
            onnx.save_model(model, str(tmp / path.name))
        staged[path] = tmp / path.name
        commit(staged, _stage_texts(texts, tmp), tmp, protect)
    return path


def save_ort(model: onnx.ModelProto, path: str | os.PathLike, *, protect: tuple[Path, ...] = (),
             texts: dict | None = None) -> Path:
    """ORT format (ORT Mobile's minimal build loads only this), converted by ORT itself with the
    basic (EP-independent) graph optimizations, committed as save_model commits."""
    import onnxruntime as ort

    path = Path(path)
    texts = {Path(k): v for k, v in (texts or {}).items()}
    check_outputs([path, *texts], protect)
    with _staging(path.parent) as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(tmp / path.name)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        opts.log_severity_level = 3
        data, folder = external.session_bytes(model)
        if folder is not None:
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        commit({path: tmp / path.name}, _stage_texts(texts, tmp), tmp, protect)
    return path


@contextlib.contextmanager
def _staging(folder: Path):
    """A private folder beside the output (same file system: renames are atomic), always removed."""
    tmp = Path(tempfile.mkdtemp(prefix=".hewn-", dir=folder))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _signals_held():
    """SIGINT, SIGTERM and SIGHUP wait until the block ends (they are delivered after it)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stage_texts(texts: dict, tmp: Path) -> dict:
    staged = {}
    for i, (path, text) in enumerate(texts.items()):
        staged[path] = tmp / f"text{i}{path.suffix}"
        staged[path].write_text(text, encoding="utf-8")
        os.chmod(staged[path], 0o644)  # a report is read by others
    return staged


def commit(build: dict, after: dict, tmp: Path, protect=()) -> None:
    """Move a staged build into place: `build` ({final: staged}, the model last) is what a runtime
    loads, `after` (the reports) follows it. The model's rename is the commit point: its data file
    has a name no earlier build reads, so a kill at any moment leaves the old model reading its own
    data, or the new one reading its own. An exception or signal before the end (Ctrl-C, SIGTERM,
    a full disk) puts every replaced file back and removes the new ones; data files of the replaced
    build are removed only once everything is in place."""
    model = list(build)[-1]
    old_data = [p for p in data_files_of(model) if p not in build]
    moves = [*build.items(), *after.items()]
    backups, created = {}, []
    try:
        for i, (final, _) in enumerate(moves):
            if final.exists():
                backups[final] = tmp / f"backup{i}"
                try:
                    os.link(final, backups[final])
                except OSError:   # a file system without hard links
                    shutil.copy2(final, backups[final])
        for final, staged in moves:
            if final not in backups:
                created.append(final)
            os.replace(staged, final)
    except BaseException:
        with _signals_held():   # a second Ctrl-C or SIGTERM must not stop the rollback half-way
            for final in created:
                final.unlink(missing_ok=True)
            for final, backup in backups.items():
                if backup.exists():
                    os.replace(backup, final)
        raise
    guarded = [Path(p) for p in protect]
    for stale in old_data:   # the replaced build's data: nothing reads it now
        if not any(_same_file(stale, g) for g in guarded):
            stale.unlink(missing_ok=True)


def json_text(data: dict) -> str:
    """Strict JSON (no NaN/Infinity tokens, which JSON parsers reject): see finite_json."""
    return json.dumps(finite_json(data), indent=2, sort_keys=False, default=_jsonable, allow_nan=False)


def finite_json(data, path: str = "", found: list | None = None):
    """`data` with every NaN/inf float replaced by null; at the top level the replaced places are
    listed under "nonfinite_values" with what they were (a ratio never timed, an SQNR with no
    noise, an error that is infinite because an output has NaN where the original has none)."""
    top = found is None
    found = [] if top else found
    if isinstance(data, float) and not math.isfinite(data):
        found.append({"where": path or "(value)", "was": repr(data)})
        return None
    if isinstance(data, dict):
        out = {k: finite_json(v, f"{path}.{k}" if path else str(k), found) for k, v in data.items()
               if not (top and k == "nonfinite_values")}
    elif isinstance(data, (list, tuple)):
        out = [finite_json(v, f"{path}[{i}]", found) for i, v in enumerate(data)]
    else:
        return data
    if top and isinstance(out, dict) and found:
        out["nonfinite_values"] = found
    return out


def save_json(data: dict, path: str | os.PathLike) -> Path:
    return save_text(json_text(data), path)


def save_text(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".hewn-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
