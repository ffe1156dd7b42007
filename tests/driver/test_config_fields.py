"""Configs refuse what they do not do (issue 29): QuantizeConfig(method="kl") was accepted and int8
then silently did nothing (InsertQDQ refused the name scheme by scheme, inside the pass)."""
import pytest

import hewn
from hewn import ConfigError


def test_an_unknown_calibration_method_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown calibration method 'kl'; known: minmax, percentile, entropy, mse"):
        hewn.QuantizeConfig(method="kl")
    assert hewn.QuantizeConfig(method="entropy").method == "entropy"


@pytest.mark.parametrize("make, match", [
    (lambda: hewn.QuantizeConfig(budget="0.01"), r"QuantizeConfig.budget must be a number, got '0.01'"),
    (lambda: hewn.QuantizeConfig(exclude="conv1"), r"QuantizeConfig.exclude must be a tuple"),
    (lambda: hewn.QuantizeConfig(bias_correction=1), r"QuantizeConfig.bias_correction must be a bool"),
    (lambda: hewn.PruneConfig(amount="0.5"), r"PruneConfig.amount must be a number"),
    (lambda: hewn.PlanConfig(samples=32.0), r"PlanConfig.samples must be an int"),
    (lambda: hewn.SVDConfig(round_to=True), r"SVDConfig.round_to must be an int"),
    (lambda: hewn.DistillConfig(lr="1e-3"), r"DistillConfig.lr must be a number"),
])
def test_every_field_is_checked_for_its_kind(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_a_list_where_a_tuple_goes_is_taken():
    assert hewn.QuantizeConfig(exclude=["conv1"]).exclude == ("conv1",)
