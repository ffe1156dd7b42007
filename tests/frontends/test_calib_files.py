"""--calib files are read as a stream (issue 26, class 13): memory-mapped where the file allows it,
a folder one file at a time; missing files and pickles are refused in one line."""
import numpy as np
import pytest

from hewn.core.errors import InputMismatchError
from hewn.frontends.calib_files import calib_source


def test_an_uncompressed_npz_is_mapped_not_read(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x, ids=np.arange(50 * 2).reshape(50, 2))
    samples = list(calib_source(str(tmp_path / "c.npz"))())
    assert len(samples) == 50 and isinstance(samples[0]["x"], np.memmap)
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in samples]), x)
    np.savez_compressed(tmp_path / "z.npz", x=x)   # compressed members cannot be mapped: read, same values
    np.testing.assert_array_equal(next(iter(calib_source(str(tmp_path / "z.npz"))()))["x"], x[:1])


def test_a_stacked_npy_and_a_folder_are_streams(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.save(tmp_path / "s.npy", x)
    assert [s[0].tolist() for s in calib_source(str(tmp_path / "s.npy"))()] == [[r] for r in x.tolist()]
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"{i}.npy", x[i:i + 1])
    source = calib_source(str(folder))
    stream = source()
    assert not isinstance(stream, list)          # files are opened as they are read
    assert [s[0].tolist() for s in stream] == [x[i:i + 1].tolist() for i in range(3)]
    assert len(list(source())) == 3               # and can be read again


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.npz", "no such file"),
    (lambda p: (np.save(p / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True), p / "o.npy")[1],
     "cannot read it as numeric arrays|object"),
    (lambda p: (np.savez(p / "u.npz", a=np.zeros((2, 1)), b=np.zeros((3, 1))), p / "u.npz")[1], "share their first axis"),
])
def test_bad_calibration_files_are_one_clear_line(tmp_path, make, match):
    with pytest.raises(InputMismatchError, match=match):
        calib_source(str(make(tmp_path)))


def test_the_cli_hands_compile_a_stream_not_a_loaded_list(tmp_path, monkeypatch):
    """Through the CLI: a folder reaches compile as a stream (old main read every file into a list
    first, so peak memory grew with the sample count) and a stacked .npy is one sample per row."""
    import onnx
    from onnx import TensorProto, helper

    import hewn.driver.compile as driver
    from hewn.cli import main

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    seen = []
    monkeypatch.setattr(driver, "compile", lambda *a, calib_data=None, **k: seen.append(calib_data) or 1 / 0)
    folder = tmp_path / "f"
    folder.mkdir()
    rows = np.arange(24, dtype=np.float32).reshape(6, 1, 4)
    for i in range(3):
        np.save(folder / f"{i}.npy", rows[i])
    np.save(tmp_path / "s.npy", rows.reshape(6, 4))     # row i is sample x[i:i+1]
    for calib, count in ((folder, 3), (tmp_path / "s.npy", 6)):
        main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib)])
        assert seen, "the CLI refused --calib " + calib.name
        data = seen.pop()
        assert not isinstance(data, list)             # nothing read before compile asks for it
        samples = list(data() if callable(data) else data)
        assert len(samples) == count and np.asarray(samples[-1][0]).tolist() == rows[count - 1].tolist()
