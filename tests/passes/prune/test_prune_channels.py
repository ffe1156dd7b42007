"""PruneChannels on ONNX graphs: the physically pruned model must equal the original with the
same channels zeroed where weighted ops read them ("masking"), on every reference model and the
model-zoo light models; bad configurations get clear errors."""
import numpy as np
import onnx
import pytest

from hewn import compile
from hewn.core.errors import ConfigError
from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, seeded_inputs
from hewn.models import REFERENCE_MODELS
from hewn.models.zoo import light_models, with_random_weights
from hewn.passes import ChannelGroups, FoldConstants, PruneChannels
from hewn.passes.prune.prune_plan import PruneConfig, choose, group_scores
from hewn.targets import CPU
from tests.helpers import masked_onnx, ort_outputs, parse, prune


def exported(name):
    from hewn.frontends import from_torch as frontend_torch

    module, example = REFERENCE_MODELS[name]()
    model = frontend_torch.export_onnx(frontend_torch.capture(module, example), 17)
    graph = to_graph(model)
    FoldConstants().run(graph, Context(CPU))  # as compile() does before pruning
    graph.cleanup().toposort()
    return to_model(graph, ir_version=model.ir_version)


def plan(model, config):
    ctx = Context(CPU)
    analysis = ctx.analysis(ChannelGroups, to_graph(model)).result
    families = analysis.prunable()
    chosen = choose(analysis, config, group_scores(analysis, families, config.importance), 8, families)
    return analysis, chosen


def assert_equals_masked(model, config, atol=1e-5):
    pruned, result = prune(model, config)
    assert result.modified, result.stats
    onnx.checker.check_model(pruned, full_check=True)
    analysis, chosen = plan(model, config)
    masked = masked_onnx(model, analysis, chosen.groups)
    feeds = seeded_inputs(input_specs(model), 2, seed=1)
    original, got, want = ort_outputs(model, feeds), ort_outputs(pruned, feeds), ort_outputs(masked, feeds)
    changed = False
    for o, g, w in zip(original, got, want):
        for oo, gg, ww in zip(o, g, w):
            scale = max(np.abs(ww).max(), 1e-6)
            np.testing.assert_allclose(gg, ww, atol=atol * scale, rtol=0)
            changed |= not np.allclose(oo, ww)
    assert changed, "masking changed nothing: the test would pass for any surgery"
    return pruned, result


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "mobilenetv2", "mlp", "bert", "digits_cnn", "minilm"])
def test_reference_model_pruned_equals_masked(name):
    model = exported(name)
    pruned, result = assert_equals_masked(model, PruneConfig(amount=0.5))
    assert result.stats["reached"] >= 0.5
    assert pruned.ByteSize() < model.ByteSize() * 0.8


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "inception_v1", "inception_v2", "squeezenet",
                                  "bvlc_alexnet"])
def test_light_model_pruned_equals_masked(name):
    model = with_random_weights(onnx.load(str(light_models()[name])), seed=0)
    assert_equals_masked(model, PruneConfig(amount=0.4))


def test_shufflenet_grouped_convs_are_refused_with_reasons():
    model = with_random_weights(onnx.load(str(light_models()["shufflenet"])), seed=0)
    pruned, result = prune(model, PruneConfig(amount=0.5))
    reasons = " ".join(b["why"] for b in result.stats["blocked"])
    assert "grouped Conv" in reasons and "group=" in reasons
    onnx.checker.check_model(pruned)
    feeds = seeded_inputs(input_specs(model), 1, seed=0)
    assert ort_outputs(pruned, feeds)[0][0].shape == ort_outputs(model, feeds)[0][0].shape


def test_amount_zero_changes_nothing():
    model = exported("resnet20")
    pruned, result = prune(model, PruneConfig(amount=0.0))
    assert not result.modified
    feeds = seeded_inputs(input_specs(model), 1, seed=0)
    np.testing.assert_array_equal(ort_outputs(pruned, feeds)[0][0], ort_outputs(model, feeds)[0][0])


def test_widths_are_rounded_and_heads_stay_whole():
    model = exported("bert")
    _, result = prune(model, PruneConfig(amount=0.5, round_to=8))
    for layer in result.stats["layers"]:
        if layer["width_after"] != layer["width_before"]:
            assert layer["width_after"] > 0
    heads = [l for l in result.stats["layers"] if any("query" in c for c in l["channels"])]
    assert heads and all(l["width_before"] == 4 for l in heads)  # families of whole heads


@pytest.mark.parametrize("importance,ranking", [("l2", "global"), ("bn_scale", "uniform"), ("activation", "global")])
def test_other_importances_and_rankings_still_equal_masking(importance, ranking):
    from hewn.core.pass_infra import Reference

    model = exported("resnet20")
    config = PruneConfig(amount=0.3, importance=importance, ranking=ranking)
    feeds = seeded_inputs(input_specs(model), 2, seed=0)
    graph = to_graph(model)
    ctx = Context(CPU, reference=Reference(feeds, ort_outputs(model, feeds)))
    result = PruneChannels(config).run(graph, ctx)
    assert result.modified and result.stats["reached"] >= 0.3
    onnx.checker.check_model(to_model(graph, ir_version=max(model.ir_version, 7)))


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5])
def test_amount_outside_range_is_a_clear_error(amount):
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        prune(exported("mlp"), PruneConfig(amount=amount))


def test_model_without_prunable_groups_is_reported_not_broken():
    model = parse("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[1,4] x) => (float[1,3] y) <float[4,3] w = {1,2,3,4,5,6,7,8,9,10,11,12}> {
        y = MatMul(x, w)
    }""")
    graph = to_graph(model)
    ctx = Context(CPU)
    result = PruneChannels(PruneConfig(amount=0.5)).run(graph, ctx)
    assert not result.modified
    assert any("no prunable" in n["why"] for n in ctx.notes)
    assert any("graph output" in b["why"] for b in result.stats["blocked"])


def test_compile_prunes_and_reports():
    module, example = REFERENCE_MODELS["resnet20"]()
    result = compile(module, "cpu", example_inputs=example, prune=0.5)
    report = result.report
    assert report["after"]["macs"] <= 0.52 * report["before"]["macs"]
    assert report["pruning"]["layers"] and report["verification"]["lossy_passes"] == ["prune_channels"]
    assert 0 < report["verification"]["mean_cosine"] <= 1
    for layer in report["pruning"]["layers"]:
        assert layer["width_after"] % 8 == 0 or layer["width_after"] == layer["width_before"]


def test_compile_prune_takes_a_config_and_refuses_nonsense():
    module, example = REFERENCE_MODELS["mlp"]()
    result = compile(module, "cpu", example_inputs=example, prune=PruneConfig(amount=0.3, metric="params"))
    assert result.report["pruning"]["reached"] >= 0.3
    with pytest.raises(ConfigError, match="prune="):
        compile(module, "cpu", example_inputs=example, prune="half")
