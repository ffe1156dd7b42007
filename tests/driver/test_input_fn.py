"""DataLoader-style (inputs, labels) batches as calibration and eval data: input_fn= selects the
inputs; without it the error says how."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hewn
from hewn.models import REFERENCE_MODELS


def _batches(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 64, generator=gen), torch.randint(0, 10, (4,), generator=gen)) for _ in range(n)]


def test_input_fn_selects_the_inputs_of_labelled_batches():
    model, example = REFERENCE_MODELS["mlp"]()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 64),
                                                                         torch.randint(0, 10, (32,))), batch_size=4)
    result = hewn.compile(model, "cpu", example_inputs=example, calib_data=loader, input_fn=lambda batch: batch[0],
                          quantize=hewn.QuantizeConfig(measure_speed=False, budget=0.05))
    assert result.report["frontend"]["verification_inputs"].startswith("8 of 8 calib_data samples, spread over all of them")
    assert result.report["quantization"]["candidates"]


def test_without_input_fn_the_error_says_how():
    model, example = REFERENCE_MODELS["mlp"]()
    with pytest.raises(hewn.InputMismatchError, match=r"got 2 input\(s\), the model takes 1.*input_fn=lambda batch: batch\[0\]"):
        hewn.compile(model, "cpu", example_inputs=example, calib_data=_batches(4, 0), quantize=False)
    with pytest.raises(hewn.ConfigError, match="input_fn= takes a function"):
        hewn.compile(model, "cpu", example_inputs=example, calib_data=_batches(4, 0), input_fn=0)


def test_input_fn_applies_to_eval_data_too():
    model, example = REFERENCE_MODELS["mlp"]()
    calib, held_out = _batches(8, 1), _batches(4, 2)
    labels = [y.numpy() for _, y in held_out]

    def accuracy(outputs):
        return float(np.mean([(o[0].argmax(-1) == y).mean() for o, y in zip(outputs, labels)]))

    result = hewn.compile(model, "cpu", example_inputs=example, calib_data=calib, eval_data=held_out,
                          metric=accuracy, input_fn=lambda batch: (batch[0],), accuracy_budget=0.5,
                          plan=hewn.PlanConfig(progress=False), measure_latency=False)
    assert result.report["plan"]["final"]["samples"] == 4
