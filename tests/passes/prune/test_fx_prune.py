"""Channel pruning on torch.fx graphs: modules get smaller weights, the result equals the
original with the pruned channels zeroed where weighted layers read them, and it still trains."""
import copy

import numpy as np
import pytest
import torch

from hewn.frontends.from_torch import capture
from hewn.models import REFERENCE_MODELS
from hewn.passes.prune.fx_channels import _attr, analyze_module, apply_fx, prune_torch
from hewn.passes.prune.prune_plan import PruneConfig, choose, group_scores


def _first(out):
    if isinstance(out, torch.Tensor):
        return out
    return out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "mlp", "bert", "digits_cnn", "minilm"])
def test_fx_pruned_equals_masked(name):
    module, example = REFERENCE_MODELS[name]()
    cap = capture(module, example)
    pruned = copy.deepcopy(cap.graph_module)
    analysis = analyze_module(pruned, cap.example_inputs)
    families = analysis.prunable()
    plan = choose(analysis, PruneConfig(amount=0.5), group_scores(analysis, families, "l1"), 8, families)
    masked = copy.deepcopy(cap.graph_module)
    removed = analysis.removed_elements(plan.groups)
    for e in analysis.edits:
        mask = removed.get(analysis.index[e.space])
        if e.role == "sink" and mask is not None and mask[e.elems].any():
            with torch.no_grad():
                _attr(masked, analysis.view.param_paths[e.param]).index_fill_(
                    e.axis, torch.from_numpy(np.asarray(e.index)[mask[e.elems]]), 0.0)
    apply_fx(pruned, analysis, plan.groups)
    with torch.no_grad():
        got, want, orig = (_first(m(*cap.example_inputs)) for m in (pruned, masked, cap.graph_module))
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-5 * max(scale, 1e-6)
    assert not torch.allclose(want, orig), "masking changed nothing: the test would pass for any surgery"
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in cap.graph_module.parameters())


def test_prune_torch_result_trains_and_user_module_is_untouched():
    module, example = REFERENCE_MODELS["resnet20"]()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    pruned, stats = prune_torch(module, example, PruneConfig(amount=0.5))
    assert stats["reached"] >= 0.5 and stats["capture"] == "torch.fx.symbolic_trace"
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])
    conv = pruned.get_submodule("layer1.0.conv1") if hasattr(pruned, "layer1") else None
    if conv is not None:
        assert conv.out_channels == conv.weight.shape[0]
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.01)
    loss = _first(pruned(torch.randn(4, 3, 32, 32))).pow(2).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_taylor_importance_needs_a_loss_and_uses_gradients():
    module, example = REFERENCE_MODELS["digits_cnn"]()
    from hewn.core.errors import TraceError

    with pytest.raises(TraceError, match="loss_fn"):
        prune_torch(module, example, PruneConfig(amount=0.3, importance="taylor"))
    x = torch.randn(8, *example[0].shape[1:])
    y = torch.randint(0, 10, (8,))
    pruned, stats = prune_torch(module, example, PruneConfig(amount=0.3, importance="taylor"),
                                loss_fn=lambda out, batch: torch.nn.functional.cross_entropy(out, y), data=[(x,)])
    assert stats["reached"] >= 0.3
    assert _first(pruned(x)).shape == (8, 10)
