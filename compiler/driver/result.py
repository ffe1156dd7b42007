"""CompiledModel: what compile() returns, and how it is saved (atomically, with its report)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import onnx

from hewn.core.errors import ConfigError
from hewn.core.storage import check_outputs, data_path, json_text, save_model, save_ort, save_text


class CompiledModel:
    """The result of compile(): `.onnx` (ModelProto), `.report` (dict), `.save(path)`, `.session()`."""

    def __init__(self, model: onnx.ModelProto, report: dict, protect: Sequence[Path] = ()):
        self.onnx = model
        self.report = report
        self._protect = tuple(protect)  # the input model's file and every data file it refers to

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the model (external data when > 2 GB or when the input's weights were; ORT
        format for a `.ort` path) and `<name>.report.json` and `<name>.report.html` beside it, as
        one build (storage.commit: an interruption leaves the earlier files as they were). None
        of them may be a file of the input model or an existing non-regular file; nothing is
        written when one is."""
        from hewn.driver.report_html import render

        path = Path(path)
        targets = [path, report_path(path), html_path(path)] + ([] if path.suffix == ".ort" else [data_path(path)])
        check_outputs(targets, self._protect)
        texts = {report_path(path): json_text(self.report), html_path(path): render(self.report, path.name)}
        try:
            if path.suffix == ".ort":
                return save_ort(self.onnx, path, protect=self._protect, texts=texts)
            return save_model(self.onnx, path, protect=self._protect, texts=texts)
        except OSError as exc:  # disk full, permissions changed meanwhile: one line, the old files back
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; nothing was written (earlier files there are as they were)") from None

    def session(self, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0):
        """An onnxruntime.InferenceSession on the compiled model."""
        from hewn.core.runtime import make_session

        return make_session(self.onnx, providers=providers, threads=threads)


def report_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".report.json")


def html_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".report.html")


def write_html(report: dict, model_path: str | os.PathLike) -> Path:
    from hewn.driver.report_html import render

    return save_text(render(report, Path(model_path).name), html_path(model_path))
