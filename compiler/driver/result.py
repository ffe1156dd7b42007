"""CompiledModel: what compile() returns, and how it is saved (atomically, with its report)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import onnx

from hewn.core.storage import json_text, save_model, save_ort, save_text


class CompiledModel:
    """The result of compile(): `.onnx` (ModelProto), `.report` (dict), `.save(path)`, `.session()`."""

    def __init__(self, model: onnx.ModelProto, report: dict, source_path: Optional[Path] = None):
        self.onnx = model
        self.report = report
        self._source_path = source_path

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically writes the model (external data when > 2 GB; ORT format for a `.ort` path)
        and `<name>.report.json` and `<name>.report.html` beside it."""
        from hewn.driver.report_html import render

        protect = (self._source_path,) if self._source_path else ()
        # everything that can fail before writing is done first; a failure or Ctrl-C while writing
        # removes what was already written, so the folder never holds a model without its report
        report_text, page = json_text(self.report), render(self.report, Path(path).name)
        written: list[Path] = []
        try:
            if Path(path).suffix == ".ort":
                path = save_ort(self.onnx, path, protect=protect)
            else:
                path = save_model(self.onnx, path, protect=protect)
            written += [path, path.with_name(path.name + ".data")]
            written.append(save_text(report_text, report_path(path)))
            written.append(save_text(page, html_path(path)))
        except BaseException:
            for item in written:
                Path(item).unlink(missing_ok=True)
            raise
        return path

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
