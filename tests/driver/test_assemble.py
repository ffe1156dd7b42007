"""compile() puts its steps into the target's pipeline by slot name: on every target the cleanup
runs before pruning (mobile's `prepare` slot once took the cleanup's place) and again after it."""
from __future__ import annotations

import pytest

import hewn
from hewn.models import REFERENCE_MODELS

CLEANUP = ("fold_constants", "remove_identity", "eliminate_dead_nodes")


@pytest.mark.parametrize("target", ["cpu", "cuda", "mobile"])
def test_cleanup_runs_before_and_after_pruning_on_every_target(target):
    model, inputs = REFERENCE_MODELS["resnet20"]()
    result = hewn.compile(model, target, example_inputs=inputs, prune=0.3, measure_latency=False)
    names = [p["pass"] for p in result.report["passes"]]
    at = names.index("prune_channels")
    assert all(name in names[:at] for name in CLEANUP), names
    assert names[at + 1] == "eliminate_dead_channels"
    assert all(name in names[at + 2:] for name in CLEANUP), names
    assert names.index("fold_batchnorm") > at  # BatchNorm scales rank the channels first
    for first in hewn.get_target(target).prepare:
        assert names[0] == first
    assert result.report["pruning"]["reached"] > 0
