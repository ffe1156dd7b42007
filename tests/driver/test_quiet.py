"""Other libraries do not talk on the user's terminal during a compile (issue 29): their warnings
and log lines go into the report's log; hewn's own warnings still reach the user."""
import logging
import warnings

import pytest
import torch

import hewn


class Chatty(torch.nn.Module):
    """A forward that warns and logs as third-party code does (transformers' deprecation notices)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3)

    def forward(self, x):
        warnings.warn("`foo` is deprecated and will be removed in v9", RuntimeWarning)  # pytest.ini ignores FutureWarning
        logging.getLogger("transformers.hewn_test_quiet").warning("some weights were not initialized")
        return torch.relu(self.conv(x))


def test_no_third_party_warning_reaches_stderr_during_a_compile(capfd, tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(logging.getLogger("transformers"), "level", logging.WARNING)   # as transformers sets it
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)
    bert = transformers.BertModel(config).eval()
    ids = torch.randint(0, 64, (1, 8))
    hewn.compile(bert, example_inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                 measure_latency=False, output=str(tmp_path / "bert.onnx"))
    result = hewn.compile(Chatty().eval(), example_inputs=(torch.randn(1, 3, 16, 16),), measure_latency=False,
                          output=str(tmp_path / "chatty.onnx"))
    err = capfd.readouterr().err
    assert "Warning" not in err and "deprecated" not in err and "not initialized" not in err, err
    texts = [entry["text"] for entry in result.report["log"]]
    assert any("deprecated" in t for t in texts) and any("not initialized" in t for t in texts), texts


def test_hewns_own_warnings_still_reach_the_user():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3),
                                 torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(32, 10)).eval()
    with pytest.warns(hewn.HewnWarning, match="QUALITY LOST"):
        hewn.compile(module, example_inputs=(torch.randn(1, 3, 32, 32),), prune=0.7, measure_latency=False)
