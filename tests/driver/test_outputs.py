"""Saving never touches the input model's files (the .onnx and every data file it refers to),
whatever the output path is called, and refuses outputs that are not regular files with one line."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import hewn
from hewn import ConfigError
from hewn.cli import main
from tests.helpers import file_digest


def _external_model(folder, data_name: str, model_name: str = "in.onnx"):
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 64] x) => (float[1, 64] y) { y = MatMul(x, w) }""")
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    path = folder / model_name
    onnx.save_model(model, str(path), save_as_external_data=True, location=data_name, size_threshold=0)
    return path, folder / data_name


@pytest.mark.parametrize("data_name, output", [
    ("out.onnx.data", "out.onnx"),          # hewn's own data-file name for out.onnx
    ("weights.bin", "weights.bin"),         # -o the input's data file itself
    ("weights.bin", "in.onnx"),             # -o the input model
    ("m.report.json", "m.onnx"),            # a data file named like the report of the output
])
def test_no_output_path_can_overwrite_a_file_of_the_input(tmp_path, data_name, output):
    source, data = _external_model(tmp_path, data_name)
    digests = {p: file_digest(p) for p in (source, data)}
    with pytest.raises(ConfigError, match="refusing to overwrite the input model's file"):
        hewn.compile(str(source), output=str(tmp_path / output))
    result = hewn.compile(str(source))
    with pytest.raises(ConfigError, match="refusing to overwrite the input model's file"):
        result.save(tmp_path / output)
    assert {p: file_digest(p) for p in digests} == digests
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({source.name, data.name})


def test_outputs_that_are_not_regular_files_are_refused(tmp_path, capsys):
    source, _ = _external_model(tmp_path, "w.data")
    (tmp_path / "folder.onnx").mkdir()
    for output in ("/dev/null", str(tmp_path / "folder.onnx")):
        with pytest.raises(ConfigError, match="not a regular file|is a folder"):
            hewn.compile(str(source), output=output)
        assert main(["compile", str(source), "-o", output]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hewn: error: refusing to write") and len(err.splitlines()) == 1
    assert not (tmp_path / "folder.onnx.report.json").exists() and not (tmp_path / "folder.report.json").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        hewn.compile(str(source), output=str(tmp_path / "missing" / "out.onnx"))


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import hewn.core.storage as storage

    source, data = _external_model(tmp_path, "w.data")
    result = hewn.compile(str(source))

    def full(model, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.external, "write", full)
    monkeypatch.setattr(storage.onnx, "save_model", full)
    with pytest.raises(ConfigError, match="cannot write .*out.onnx: No space left on device; nothing was written"):
        result.save(tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "w.data"]


def test_the_causal_lm_route_protects_the_inputs_data_file_too(tmp_path, capsys):
    """Issue 26, class 5: `-o weights.bin` where weights.bin is a KV-cache model's data file."""
    pytest.importorskip("transformers")
    from hewn.frontends.causal_lm import export_causal_lm
    from tests.llm.tiny import tiny_lm

    export_causal_lm(tiny_lm("llama"), str(tmp_path / "inline.onnx"))
    source = tmp_path / "lm.onnx"
    onnx.save_model(onnx.load(str(tmp_path / "inline.onnx")), str(source), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "inline.onnx").unlink()
    data = tmp_path / "weights.bin"
    digests = {p: file_digest(p) for p in (source, data)}
    calib = [np.arange(64) % 100]
    for output in (data, source):
        with pytest.raises(ConfigError, match="refusing to overwrite the input model's file"):
            hewn.compile(str(source), "cpu", calib_data=calib, output=str(output))
        assert main(["compile", str(source), "-o", str(output), "--calib", str(_ids(tmp_path))]) == 2
        assert "refusing to overwrite the input model's file" in capsys.readouterr().err
    assert {p: file_digest(p) for p in digests} == digests


def _ids(folder):
    path = folder / "ids.npy"
    if not path.exists():
        np.save(path, (np.arange(64) % 100)[None])
    return path
