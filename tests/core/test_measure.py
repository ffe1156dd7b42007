"""Outputs are judged by what fits their dtype, NaN/Inf where the original is finite always fails,
and a NaN the original also produces is equal (issue: budgets that mean what they say)."""
from __future__ import annotations

import math

import numpy as np

from hewn.core.measure import compare, output_error


def _one(ref, act) -> dict:
    return output_error([[np.asarray(ref)]], [[np.asarray(act)]])


def test_integer_outputs_are_judged_by_exact_match_not_cosine():
    ids = np.arange(100) % 10
    changed = ids.copy()
    changed[:4] = (changed[:4] + 1) % 10            # 4% of the class ids change
    err = _one(ids, changed)
    assert math.isclose(err["exact_match"], 0.96) and math.isclose(err["error"], 0.04)
    assert err["outputs"][0]["kind"] == "integer"
    # the cosine of the id vectors would have said 0.99+: it is not what is budgeted
    assert err["error"] > 1 - float(ids @ changed / (np.linalg.norm(ids) * np.linalg.norm(changed)))


def test_bool_outputs_are_judged_by_flip_rate():
    mask = np.zeros(50, dtype=bool)
    flipped = mask.copy()
    flipped[:5] = True
    err = _one(mask, flipped)
    assert math.isclose(err["flip_rate"], 0.1) and math.isclose(err["error"], 0.1)


def test_a_change_of_scale_is_an_error_although_the_cosine_is_one():
    ref = np.linspace(1, 2, 64, dtype=np.float32)
    err = _one(ref, ref * 0.65)                      # clipped/rescaled by 35%
    assert err["mean_cosine"] > 0.99999
    assert math.isclose(err["outputs"][0]["rel_l2_err"], 0.35, rel_tol=1e-5)
    assert err["error"] > 0.06                       # 0.35^2 / 2


def test_nan_where_the_original_is_finite_is_a_failure_everywhere():
    ref = np.ones(8, dtype=np.float32)
    act = ref.copy()
    act[3] = np.nan
    err = _one(ref, act)
    assert err["nonfinite"] == 1 and err["error"] == math.inf
    all_nan = np.full(8, np.nan, dtype=np.float32)
    err = _one(ref, all_nan)                         # the old measure reported "max abs error 0" here
    assert err["nonfinite"] == 8 and err["error"] == math.inf
    assert not compare([[ref]], [[act]], rtol=1e-4, atol=1e-5).passed


def test_a_nan_the_original_also_produces_is_equal():
    ref = np.array([np.nan, 1.0, -np.inf, 2.0], dtype=np.float32)
    act = ref.copy()
    act[1] += 1e-7
    assert compare([[ref]], [[act]], rtol=1e-4, atol=1e-5).passed
    err = _one(ref, act)
    assert "nonfinite" not in err and err["error"] < 1e-10
    assert _one(ref, np.array([np.nan, 1.0, np.inf, 2.0], np.float32))["error"] == math.inf   # -inf became +inf


def test_a_wiped_out_channel_fails_although_the_whole_tensor_agrees():
    """A detector's [1, 4 + classes, anchors] output: boxes in pixels, scores in 0..1. Zeroing every
    score leaves the whole-tensor cosine near 1; the channel check makes it an error."""
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 320, (1, 4, 200)), rng.uniform(0, 0.9, (1, 3, 200))], axis=1)
    act = ref.copy()
    act[:, 4:] = 0.0
    err = _one(ref.astype(np.float32), act.astype(np.float32))
    assert err["mean_cosine"] > 0.9999                  # what the old check alone saw
    assert math.isclose(err["outputs"][0]["worst_channel_rel_err"], 1.0)
    assert err["error"] >= 0.5                          # fails any budget
    small = ref * (1 + 1e-3 * rng.standard_normal(ref.shape))
    assert _one(ref.astype(np.float32), small.astype(np.float32))["error"] < 1e-5   # noise stays noise
