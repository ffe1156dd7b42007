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
        """Atomically writes the model (external data when > 2 GB; ORT format for a `.ort` path)
        and `<name>.report.json` and `<name>.report.html` beside it. None of them may be a file of
        the input model or an existing non-regular file; nothing is written when one is."""
        from hewn.driver.report_html import render

        path = Path(path)
        targets = [path, report_path(path), html_path(path)] + ([] if path.suffix == ".ort" else [data_path(path)])
        check_outputs(targets, self._protect)
        # everything that can fail before writing is done first; a failure or Ctrl-C while writing
        # removes what was already written, so the folder never holds a model without its report
        report_text, page = json_text(self.report), render(self.report, path.name)
        written: list[Path] = []
        try:
            if path.suffix == ".ort":
                path = save_ort(self.onnx, path, protect=self._protect)
            else:
                path = save_model(self.onnx, path, protect=self._protect)
            written += [path, data_path(path)]
            written.append(save_text(report_text, report_path(path)))
            written.append(save_text(page, html_path(path)))
        except BaseException as exc:
            for item in written:
                Path(item).unlink(missing_ok=True)
            if isinstance(exc, OSError):  # disk full, permissions changed meanwhile: one line, nothing left
                raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
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
