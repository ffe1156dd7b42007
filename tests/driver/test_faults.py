"""Faults: a failing pass is named with the passes before it, or skipped (undone, reported) when
asked; Ctrl-C or a failure while compiling or saving leaves no partial output and the input
untouched."""
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from hewn import compile
from hewn.cli import main
from hewn.core.errors import ConfigError, PassError
from hewn.core.pass_infra import Pass
from hewn.core.runtime import input_specs, make_session, run_all, seeded_inputs
from tests.helpers import IDENTITY_CHAIN, file_digest, op_counts, parse

MODEL = IDENTITY_CHAIN


class Vandal(Pass):
    """Breaks the graph half way, then fails: what a buggy pass does."""
    name = "vandal"

    @dataclass(frozen=True)
    class Config:
        interrupt: bool = False

    def run(self, graph, ctx):
        graph.nodes.pop()  # half-done damage that must not survive
        ctx.note(self.name, "model", "a note from a pass that then fails")
        if self.config.interrupt:
            raise KeyboardInterrupt
        raise ValueError("index 7 is out of range for axis 0")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_failing_pass_names_itself_and_the_passes_before(tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(parse(MODEL), str(path))
    before = path.read_bytes()
    with pytest.raises(PassError, match=r"pass 'vandal' failed \(after \[fold_constants\]\): ValueError: index 7"):
        compile(str(path), passes=["fold_constants", Vandal(), "remove_identity"], output=str(tmp_path / "out.onnx"))
    assert _files(tmp_path) == ["in.onnx"] and path.read_bytes() == before


def test_on_error_skip_undoes_the_pass_and_goes_on(tmp_path):
    model = parse(MODEL)
    result = compile(model, passes=["fold_constants", Vandal(), "remove_identity"], on_error="skip",
                     output=str(tmp_path / "out.onnx"))
    report = result.report
    assert report["skipped_passes"] == [{"pass": "vandal", "error": "ValueError: index 7 is out of range for axis 0",
                                         "after": ["fold_constants"]}]
    assert op_counts(result.onnx) == {"Relu": 1, "Sigmoid": 1}  # remove_identity ran after; nothing lost
    assert report["verification"]["passed"]  # the half-done damage was undone
    notes = [n["why"] for n in report["left_intact"]]
    assert not any("then fails" in n for n in notes) and any("skipped" in n for n in notes)
    saved = onnx.load(str(tmp_path / "out.onnx"))
    feeds = seeded_inputs(input_specs(model), 1, seed=0)
    np.testing.assert_allclose(run_all(make_session(saved), feeds)[0][0], run_all(make_session(model), feeds)[0][0],
                               rtol=1e-6)
    assert "skipped_passes" in (tmp_path / "out.report.json").read_text()


def test_on_error_skip_from_the_cli(tmp_path, capsys):
    path = tmp_path / "in.onnx"
    onnx.save(parse(MODEL), str(path))
    with pytest.raises(ConfigError, match="on_error must be 'raise' or 'skip'"):
        compile(str(path), on_error="ignore")
    assert main(["compile", str(path), "-o", str(tmp_path / "out.onnx"), "--on-error", "skip"]) == 0


def test_keyboard_interrupt_in_a_pass_leaves_nothing(tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(parse(MODEL), str(path))
    digest = file_digest(path)
    with pytest.raises(KeyboardInterrupt):  # never skipped, even with on_error="skip"
        compile(str(path), passes=[Vandal(Vandal.Config(interrupt=True))], on_error="skip",
                output=str(tmp_path / "out.onnx"))
    assert _files(tmp_path) == ["in.onnx"]
    assert file_digest(path) == digest


@pytest.mark.parametrize("when", ["model", "report"])
def test_interrupt_while_saving_leaves_nothing(tmp_path, monkeypatch, when):
    """Ctrl-C in the middle of writing the model, or after it while writing the report."""

    import hewn.core.storage as storage

    path = tmp_path / "in.onnx"
    onnx.save(parse(MODEL), str(path))
    digest = file_digest(path)
    result = compile(str(path))
    if when == "model":
        def half_written(model, target, *args, **kwargs):
            with open(target, "wb") as handle:
                handle.write(model.SerializeToString()[:10])
            raise KeyboardInterrupt

        monkeypatch.setattr(storage.onnx, "save_model", half_written)
    else:
        real = storage.os.replace

        def interrupted(staged, target):
            if str(target).endswith(".html"):   # the model and report.json are in place already
                raise KeyboardInterrupt
            return real(staged, target)

        monkeypatch.setattr(storage.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "out.onnx")
    assert _files(tmp_path) == ["in.onnx"]  # no model, no report, no temporary folder
    assert file_digest(path) == digest
