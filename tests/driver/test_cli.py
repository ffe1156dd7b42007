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
