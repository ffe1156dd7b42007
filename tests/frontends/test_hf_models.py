"""Hugging Face models as users call them (random weights from configs built here; no hub access):
encoders and decoders, positional and keyword inputs, with and without calibration data. Each
compiled model runs at two batch sizes and two sequence lengths and matches torch there."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hewn

transformers = pytest.importorskip("transformers")
VOCAB = 1000


def _small(cls_name: str, config_name: str, **kw):
    def make():
        return getattr(transformers, cls_name)(getattr(transformers, config_name)(**kw))
    return make


TOKEN_MODELS = {
    "bert": _small("BertModel", "BertConfig", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, vocab_size=VOCAB),
    "distilbert": _small("DistilBertModel", "DistilBertConfig", dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                         vocab_size=VOCAB),
    "roberta": _small("RobertaModel", "RobertaConfig", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, vocab_size=VOCAB),
    "t5_encoder": _small("T5EncoderModel", "T5Config", d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                         vocab_size=VOCAB),
    "gpt2_base": _small("GPT2Model", "GPT2Config", n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB,
                        n_positions=128, bos_token_id=0, eos_token_id=0),
    "gpt2": _small("GPT2LMHeadModel", "GPT2Config", n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB,
                   n_positions=128, bos_token_id=0, eos_token_id=0),
    "llama": _small("LlamaForCausalLM", "LlamaConfig", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB),
    "gemma": _small("Gemma3ForCausalLM", "Gemma3TextConfig", hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=16, intermediate_size=128,
                    vocab_size=VOCAB),
}


def _tokens(batch, seq, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, VOCAB, (batch, seq), generator=gen),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def _first(out):
    return (out.to_tuple() if hasattr(out, "to_tuple") else out)[0].detach().numpy()


def _cosine(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def _check_sizes(model, result, sizes, lossless):
    session = result.session()
    for batch, seq in sizes:
        feeds = _tokens(batch, seq, seed=batch * 100 + seq)
        with torch.no_grad():
            expected = _first(model(**feeds))
        got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        assert got.shape == expected.shape
        assert np.isfinite(got).all()
        if lossless:
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
        else:
            assert _cosine(got, expected) > 0.98, (batch, seq)


@pytest.mark.parametrize("name", sorted(TOKEN_MODELS))
def test_token_models_compile_with_keyword_inputs_and_dynamic_dims(name):
    torch.manual_seed(0)
    model = TOKEN_MODELS[name]().eval()
    result = hewn.compile(model, "cpu", example_inputs=_tokens(1, 16), measure_latency=False)
    frontend = result.report["frontend"]
    assert frontend["inputs"] == ["input_ids", "attention_mask"]
    assert frontend["dynamic_dims"]["input_ids"] == {0: "batch", 1: "sequence"}
    assert "second size" in frontend["verification_inputs"]
    if "use_cache" in frontend:  # decoders: deliberately exported without a KV cache, and said so
        assert frontend["use_cache"].startswith("False")
    _check_sizes(model, result, [(1, 16), (3, 9), (2, 40)], lossless=True)


@pytest.mark.slow
@pytest.mark.parametrize("name,planner", [("bert", True), *((n, False) for n in sorted(TOKEN_MODELS) if n != "bert")])
def test_token_models_compile_with_calibration(name, planner):
    """int8 from calib_data (and, for BERT, the planner: torch.fx cannot trace it, so it plans on the
    ONNX export); the result runs at other batch sizes and sequence lengths within the budget."""
    torch.manual_seed(0)
    model = TOKEN_MODELS[name]().eval()
    calib = [{k: v.numpy() for k, v in _tokens(2, 16, seed=s).items()} for s in range(8)]
    result = hewn.compile(model, "cpu", example_inputs=_tokens(1, 16), calib_data=calib,
                          accuracy_budget=0.02 if planner else None, measure_latency=False)
    verification = result.report["verification"]
    # lossless when int8 did not fit or pay (then "passed"), else within the default budget
    assert verification.get("passed") or verification["error"] <= 0.02
    assert "second size" in result.report["frontend"]["verification_inputs"]
    if planner:
        assert result.report["plan"]["final"]["budget_met"]
    _check_sizes(model, result, [(1, 16), (4, 24)], lossless=False)


def test_bert_with_positional_token_ids():
    """BertModel(ids): the positional call used to fail with 'got multiple values for argument use_cache'."""
    torch.manual_seed(0)
    model = TOKEN_MODELS["bert"]().eval()
    ids = _tokens(1, 12)["input_ids"]
    result = hewn.compile(model, "cpu", example_inputs=(ids,), measure_latency=False)
    assert [i.name for i in result.onnx.graph.input] == ["input_ids"]
    other = _tokens(3, 20)["input_ids"]
    with torch.no_grad():
        expected = _first(model(other))
    np.testing.assert_allclose(result.session().run(None, {"input_ids": other.numpy()})[0], expected,
                               rtol=1e-3, atol=1e-4)


def test_example_kwargs_add_keywords_to_positional_inputs():
    torch.manual_seed(0)
    model = TOKEN_MODELS["distilbert"]().eval()
    feeds = _tokens(2, 10)
    result = hewn.compile(model, "cpu", example_inputs=(feeds["input_ids"],),
                          example_kwargs={"attention_mask": feeds["attention_mask"], "return_dict": False},
                          measure_latency=False)
    assert result.report["frontend"]["constants"] == {"return_dict": "False"}
    got = result.session().run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, _first(model(**feeds)), rtol=1e-3, atol=1e-4)


def test_vit_takes_pixel_values_at_two_batch_sizes():
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                         intermediate_size=128, image_size=32, patch_size=8)).eval()
    result = hewn.compile(model, "cpu", example_inputs={"pixel_values": torch.randn(1, 3, 32, 32)},
                          measure_latency=False)
    assert result.report["frontend"]["dynamic_dims"] == {"pixel_values": {0: "batch"}}
    calib = [{"pixel_values": np.random.default_rng(i).standard_normal((2, 3, 32, 32), dtype=np.float32)}
             for i in range(8)]
    int8 = hewn.compile(model, "cpu", example_inputs={"pixel_values": torch.randn(1, 3, 32, 32)}, calib_data=calib,
                        measure_latency=False)
    for batch in (1, 4):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = _first(model(pixel_values=x))
        np.testing.assert_allclose(result.session().run(None, {"pixel_values": x.numpy()})[0], expected,
                                   rtol=1e-3, atol=1e-4)
        assert _cosine(int8.session().run(None, {"pixel_values": x.numpy()})[0], expected) > 0.98


def test_unknown_keyword_is_one_clear_error():
    """BertModel.forward takes **kwargs, so the model itself says what is missing."""
    model = TOKEN_MODELS["bert"]().eval()
    with pytest.raises(hewn.InputMismatchError, match=r"BertModel.forward failed on example_inputs \[input_idz"):
        hewn.compile(model, example_inputs={"input_idz": torch.zeros(1, 4, dtype=torch.long)})
