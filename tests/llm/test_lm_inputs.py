"""Causal-LM inputs checked up front (issue 26, class 10): a tokenizer is a local folder that holds
one (never a hub lookup), a KV-cache file must have the layout's names, a kernel cache cannot
change a plan silently, a missed budget is said."""
import json

import numpy as np
import onnx
import pytest

pytest.importorskip("transformers")

import hewn
from hewn.core.errors import ConfigError, UnsupportedModelError
from hewn.frontends.causal_lm import export_causal_lm
from tests.llm.tiny import tiny_lm


@pytest.fixture(scope="module")
def lm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.onnx"
    export_causal_lm(tiny_lm("llama"), str(path))
    return path


def test_a_tokenizer_name_that_is_not_a_folder_is_refused_without_a_hub_request(lm_file, tmp_path, monkeypatch):
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError("transformers was asked to load a tokenizer")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    with pytest.raises(ConfigError, match="is not a folder here; give the local folder"):
        hewn.compile(str(lm_file), calib_data="some text " * 50, tokenizer="meta-llama/Llama-3-8B")
    empty = tmp_path / "tok"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        hewn.compile(str(lm_file), calib_data="some text " * 50, tokenizer=str(empty))


def test_a_kv_cache_file_without_the_layouts_names_is_refused_naming_them(lm_file, tmp_path):
    model = onnx.load(str(lm_file))
    renamed = "scores"
    for node in model.graph.node:
        node.output[:] = [renamed if o == "logits" else o for o in node.output]
    for out in model.graph.output:
        if out.name == "logits":
            out.name = renamed
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    calib = [np.random.default_rng(0).integers(0, 384, 64)]
    with pytest.raises(UnsupportedModelError, match="has no logits"):
        hewn.compile(str(path), calib_data=calib)


@pytest.mark.parametrize("content", ["not json", "[1, 2]", json.dumps({"64x64:4:32:4:t2": {"decode": "x"}}),
                                     json.dumps({"64x64:4:32:4:t2": {"decode": -1.0, "prefill": 1e-4}})])
def test_a_malformed_kernel_cache_is_measured_again_and_reported(tmp_path, content):
    from hewn.passes.quant.weight_only.kernels import KernelCosts

    path = tmp_path / "kernels.json"
    path.write_text(content)
    costs = KernelCosts(threads=1, path=path)
    row = costs.cost(64, 64, 4, 32, 4)
    assert row["decode"] > 0 and row["prefill"] > 0 and costs.measured == 1
    summary = costs.summary()
    assert summary["measured_now"] == 1 and summary["entries_read"] == 0


def test_the_kernel_cache_is_keyed_by_the_cpu_model(monkeypatch):
    from hewn.passes.quant.weight_only import kernels

    first = kernels._cache_path()
    monkeypatch.setattr(kernels, "_cpu_model", lambda: "another CPU")
    assert kernels._cache_path() != first


def test_a_missed_budget_is_said_in_the_outcome_with_the_digits_it_needs():
    from hewn.driver.outcome import _weights_summary, percent

    weights = {"bits": {"4": 3, "8": 1}, "float_perplexity": 10.0, "perplexity": 10.2, "budget": 0.001,
               "over_budget": "even the most accurate options raise perplexity to 10.200 (limit 10.010)"}
    line = _weights_summary(weights)
    assert "budget +0.1%" in line and "+2.0%" in line and "BUDGET MISSED" in line
    assert percent(0.05) == "5.0%" and percent(0.0004) == "0.04%"


@pytest.mark.parametrize("bad", [999, -1])
def test_token_ids_outside_a_torch_lms_vocabulary_are_refused_before_the_export(monkeypatch, bad):
    """Ids >= vocab (a mismatched tokenizer) or negative (they would wrap) are one line, said before
    the 15-20 s export, not an ORT error after it."""
    from hewn.core.errors import InputMismatchError
    from hewn.frontends import causal_lm_check

    def no_export(*args, **kwargs):
        raise AssertionError("the model was exported before its token ids were checked")

    monkeypatch.setattr(causal_lm_check, "load_checked", no_export)
    model = tiny_lm("llama")
    vocab = model.get_input_embeddings().num_embeddings
    ids = np.arange(64) % vocab
    ids[5] = bad if bad < 0 else vocab + bad
    with pytest.raises(InputMismatchError, match=f"token id {ids[5]}, outside the model's vocabulary of {vocab}"):
        hewn.compile(model, "cpu", calib_data=[ids])


def test_the_cli_takes_token_ids_for_a_kv_cache_lm(lm_file, tmp_path, capsys):
    """--calib ids.npy on a KV-cache model is token ids (one sequence per row), not model inputs;
    float arrays are one line saying what it takes."""
    from hewn.cli import main

    ids, floats = tmp_path / "ids.npy", tmp_path / "floats.npy"
    np.save(ids, (np.arange(256) % 100).reshape(2, 128))
    np.save(floats, np.zeros((2, 128), np.float32))
    assert main(["compile", str(lm_file), "-o", str(tmp_path / "small.onnx"), "--calib", str(ids)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["compile", str(lm_file), "-o", str(tmp_path / "bad.onnx"), "--calib", str(floats)]) == 2
    err = capsys.readouterr().err
    assert "token ids are 1-D or 2-D integer arrays, got float32 [2, 128]" in err and len(err.strip().splitlines()) == 1
