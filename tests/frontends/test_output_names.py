"""ONNX output names and output dim labels of a torch module's export (hewn.frontends.torch_names):
ModelOutput/dict keys, names a module declares, positions otherwise; dims labelled `batch` and
`sequence` like the inputs, instead of the exporter's `LayerNormalizationoutput_0_dim_0`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hewn
from hewn.core.errors import ConfigError
from hewn.frontends.from_torch import export_planned, load
from hewn.targets import CPU


def _dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _outputs(model):
    return {o.name: _dims(o) for o in model.graph.output}


class Tagger(torch.nn.Module):
    """Token ids -> a dict of per-token scores and a pooled vector."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, input_ids):
        hidden = self.embed(input_ids)
        return {"scores": self.head(hidden), "pooled": hidden.mean(1)}


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x), x.relu()


class Named(Pair):
    output_names = ("logits", "features")


def _ids(batch=1, seq=6):
    return torch.randint(0, 50, (batch, seq), generator=torch.Generator().manual_seed(0))


def test_dict_keys_name_the_outputs_and_their_dims_follow_the_inputs():
    torch.manual_seed(0)
    source = load(Tagger().eval(), (_ids(),), CPU)
    assert _outputs(source.model) == {"scores": ["batch", "sequence", 4], "pooled": ["batch", 16]}
    assert source.info["outputs"] == ["scores", "pooled"]
    again = export_planned(source.captured, source.captured.graph_module, 17)   # the torch side's re-export
    assert _outputs(again) == _outputs(source.model)


def test_tuples_are_named_by_position_and_a_module_may_declare_names():
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    assert _outputs(load(Pair().eval(), (x,), CPU).model) == {"output_0": ["batch", 3], "output_1": ["batch", 8]}
    assert list(_outputs(load(Named().eval(), (x,), CPU).model)) == ["logits", "features"]
    single = torch.nn.Linear(8, 3).eval()
    assert _outputs(load(single, (x,), CPU).model) == {"output": ["batch", 3]}


@pytest.mark.parametrize("names, why", [(("only_one",), "has 1 name"), (("a", "a"), "repeats"),
                                        (("x", "y"), "reuses input name"), (3, "not a string")])
def test_declared_names_that_cannot_name_the_outputs_are_one_clear_error(names, why):
    module = Named().eval()
    module.output_names = names
    with pytest.raises(ConfigError, match=why):
        load(module, (torch.randn(2, 8),), CPU)


def test_a_dict_key_equal_to_an_input_name_falls_back_to_positions():
    class Echo(torch.nn.Module):
        def forward(self, x):
            return {"x": x * 2, "y": x + 1}

    assert list(_outputs(load(Echo().eval(), (torch.randn(2, 3),), CPU).model)) == ["output_0", "output_1"]


def test_hf_bert_compiles_to_last_hidden_state_with_batch_and_sequence_dims():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)
    model = transformers.BertModel(config).eval()
    example = {"input_ids": torch.randint(0, 100, (1, 8)), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    result = hewn.compile(model, "cpu", example_inputs=example, measure_latency=False)
    outputs = _outputs(result.onnx)
    assert outputs == {"last_hidden_state": ["batch", "sequence", 32], "pooler_output": ["batch", 32]}
    assert {i.name: _dims(i) for i in result.onnx.graph.input} == {"input_ids": ["batch", "sequence"],
                                                                   "attention_mask": ["batch", "sequence"]}
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 100, (3, 5)), "attention_mask": np.ones((3, 5), np.int64)}
    got = dict(zip([o.name for o in result.onnx.graph.output], result.session().run(None, feeds)))
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    np.testing.assert_allclose(got["last_hidden_state"], expected, rtol=1e-3, atol=1e-4)
