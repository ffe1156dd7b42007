"""KV-cache export of causal LMs: logits equal transformers' at prefill, decode and batch sizes, and
greedy generation through the cache equals transformers recomputing the whole sequence."""
import numpy as np
import pytest

pytest.importorskip("transformers")

from hewn.core.errors import ConfigError, VerificationError
from hewn.core.runtime import file_session as make_session
from hewn.frontends.causal_lm import export_causal_lm, is_causal_lm
from hewn.core.kv_cache import Decoder
from hewn.frontends.causal_lm_check import check_generation, check_logits

from tests.llm.tiny import tiny_lm


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2", "gpt2"])
def test_export_matches_transformers(tmp_path, family):
    model = tiny_lm(family)
    path = str(tmp_path / "lm.onnx")
    layout = export_causal_lm(model, path)
    session = make_session(path)
    rows = check_logits(model, session, layout)
    assert all(r["max_rel_error"] < 1e-3 for r in rows)
    prompts = [np.array([5, 17, 33, 2, 9]), np.arange(1, 12)]
    # 20 new tokens run past the sliding window of 8 on gemma3's first layer
    assert check_generation(model, session, layout, prompts, new_tokens=20)["equal"]


def test_generation_check_can_fail(tmp_path):
    model = tiny_lm("llama")
    path = str(tmp_path / "lm.onnx")
    layout = export_causal_lm(model, path)
    other = tiny_lm("llama", seed=1)  # different weights: its tokens differ
    with pytest.raises(VerificationError):
        check_generation(other, make_session(path), layout, [np.array([5, 17, 33, 2, 9])], new_tokens=8)
    with pytest.raises(VerificationError):
        check_logits(other, make_session(path), layout)


@pytest.mark.parametrize("length", [24, 129, 300])   # one chunk; a chunk plus its last target; three chunks
def test_perplexity_of_a_window(tmp_path, length):
    model = tiny_lm("llama")
    path = str(tmp_path / "lm.onnx")
    layout = export_causal_lm(model, path)
    window = np.random.default_rng(0).integers(0, 384, length)
    import torch
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(window[None]), use_cache=False).logits[0, :-1]
        ref = torch.nn.functional.cross_entropy(logits, torch.from_numpy(window[1:])).exp().item()
    assert Decoder(make_session(path), layout).perplexity([window]) == pytest.approx(ref, rel=1e-4)


def test_not_a_causal_lm_is_refused(tmp_path):
    import torch
    assert not is_causal_lm(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="not a Hugging Face causal LM"):
        export_causal_lm(torch.nn.Linear(2, 2), str(tmp_path / "x.onnx"))
