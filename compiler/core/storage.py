"""Atomic, never-overwrite-the-input saving of models and reports."""
from __future__ import annotations

import json
import math
import os
import shutil
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
    return path.with_name(path.name + ".data")


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, protect: tuple[Path, ...] = (),
               external_data: bool | None = None) -> Path:
    """Write `model` to `path` atomically: into a temporary folder beside it, then rename.

    Models over ~1.8 GB, models whose weights are on disk (external data), or external_data=True
    get their weights in `<name>.data` beside it, streamed one tensor at a time.
    `protect` lists files that must never be overwritten (the user's input model and its data).
    """
    path = Path(path)
    check_outputs([path, data_path(path)], protect)
    if external_data is None:
        external_data = external.has_external(model) or model.ByteSize() >= EXTERNAL_DATA_THRESHOLD
    tmp = Path(tempfile.mkdtemp(prefix=".hewn-", dir=path.parent))
    try:
        staged = tmp / path.name
        if external_data:
            data_name = path.name + ".data"
            external.write(model, staged, data_name)
            os.replace(tmp / data_name, path.parent / data_name)
        else:
            onnx.save_model(model, str(staged))
        os.replace(staged, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


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


def save_ort(model: onnx.ModelProto, path: str | os.PathLike, *, protect: tuple[Path, ...] = ()) -> Path:
    """ORT format (ORT Mobile's minimal build loads only this), converted by ORT itself with the
    basic (EP-independent) graph optimizations, written atomically."""
    import onnxruntime as ort

    path = Path(path)
    check_outputs([path], protect)
    tmp = Path(tempfile.mkdtemp(prefix=".hewn-", dir=path.parent))
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(tmp / path.name)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        opts.log_severity_level = 3
        data, folder = external.session_bytes(model)
        if folder is not None:
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
