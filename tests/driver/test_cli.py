import json

import onnx

from hewn.cli import main
from hewn.models.zoo import light_models, with_random_weights


def test_compile_and_inspect(tmp_path, capsys):
    src = tmp_path / "squeezenet.onnx"
    onnx.save(with_random_weights(onnx.load(str(light_models()["squeezenet"]))), str(src))
    out = tmp_path / "out.onnx"
    assert main(["compile", str(src), "-o", str(out), "--target", "mobile"]) == 0
    text = capsys.readouterr().out
    assert "verified on" in text and "remove_identity" in text
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["target"]["name"] == "mobile" and report["verification"]["passed"]
    onnx.checker.check_model(onnx.load(str(out)))

    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["opset"] == 9 and info["inputs"][0]["shape"] == [1, 3, 224, 224] and info["macs"] > 3e8

    assert main(["compile", str(src), "-o", str(tmp_path / "o2.onnx"), "--passes", "remove_identity"]) == 0
    assert main(["compile", str(src), "-o", str(tmp_path / "o3.onnx"), "--passes", "nonsense"]) == 2
    assert "unknown pass 'nonsense'" in capsys.readouterr().err


def test_version_is_the_one_in_pyproject(capsys):
    from pathlib import Path

    import pytest

    import hewn

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    declared = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hewn {declared}" and hewn.__version__ == declared


def test_every_option_of_every_command_has_help():
    import argparse

    from hewn.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append((" ".join(path), action.option_strings or action.dest))

    walk(build_parser(), [])
    assert not missing, missing


def test_quant_int8_forces_int8_where_auto_would_keep_float(tmp_path, capsys):
    """(issue 29) `--quant on` did not force int8 and nothing could: a tiny model, where int8 is not
    faster, is int8 with --quant int8 and its cost is stated."""
    import numpy as np

    from tests.helpers import parse

    model = parse("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 16] x) => (float[1, 8] y) {
        w = Constant <value = float[16, 8] {""" + ", ".join(f"{(i % 7 - 3) / 10:.1f}" for i in range(128)) + """}> ()
        m = MatMul(x, w)
        y = Relu(m)
    }""")
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    code = main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--calib",
                 str(tmp_path / "calib.npz"), "--quant", "int8", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code in (0, 3) and "chosen" in report["quantization"], report["quantization"]
    assert report["quantization"]["chosen"]["scheme"].startswith("static")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "DequantizeLinear" in ops or "MatMulInteger" in ops or "QLinearMatMul" in ops
    assert "output error" in report["outcome"]["summary"]
