"""`hewn compile model.onnx --calib corpus.txt --tokenizer DIR` on a KV-cache model."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

from hewn.frontends.causal_lm import export_causal_lm

from tests.llm.tiny import tiny_lm

TEXT = ("the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun and "
        "a bird sings on the old tree near the river bank where children play every summer day ") * 6


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = sorted(set(TEXT.split()))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)


def _hewn(*args):
    return subprocess.run([sys.executable, "-m", "hewn", *args], capture_output=True, text=True, timeout=600)


def test_cli_compiles_a_causal_lm_on_text(tmp_path):
    model = tmp_path / "lm.onnx"
    export_causal_lm(tiny_lm("llama"), str(model))
    (tmp_path / "corpus.txt").write_text(TEXT)
    _tokenizer(tmp_path / "tok")
    out = tmp_path / "small.onnx"
    r = _hewn("compile", str(model), "-o", str(out), "--calib", str(tmp_path / "corpus.txt"),
              "--tokenizer", str(tmp_path / "tok"), "--budget", "0.05")
    assert r.returncode == 0, r.stderr
    assert "steps down the measured ladders" in r.stdout and "perplexity" in r.stdout
    report = json.loads((tmp_path / "small.report.json").read_text())
    assert report["weights"]["budget"] == 0.05 and report["weights"]["calibration_tokens"] > 100
    assert "Weights: bits per layer" in (tmp_path / "small.report.html").read_text()


def test_cli_text_calibration_needs_a_tokenizer_and_a_kv_cache_model(tmp_path):
    model = tmp_path / "lm.onnx"
    export_causal_lm(tiny_lm("llama"), str(model))
    (tmp_path / "corpus.txt").write_text(TEXT)
    r = _hewn("compile", str(model), "-o", str(tmp_path / "o.onnx"), "--calib", str(tmp_path / "corpus.txt"))
    assert r.returncode != 0 and "--tokenizer" in r.stderr and "Traceback" not in r.stderr
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(g), tmp_path / "relu.onnx")
    r = _hewn("compile", str(tmp_path / "relu.onnx"), "-o", str(tmp_path / "o.onnx"), "--calib", str(tmp_path / "corpus.txt"))
    assert r.returncode != 0 and "KV cache" in r.stderr and "Traceback" not in r.stderr
