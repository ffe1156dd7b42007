"""A torch module whose export would be right only on the example is refused: `.item()` and the
like are caught in the fx graph with the source line, and the export is checked on inputs other
than the example (it was compared only on example_inputs, and came back wrong by 5.4 elsewhere)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hewn import TraceError, VerificationError, compile
from hewn.frontends.from_torch import capture, check_export, export_onnx


class ItemScale(torch.nn.Module):
    def forward(self, x):
        return x / x.abs().max().item()


class ToList(torch.nn.Module):
    def forward(self, x):
        return x * x.mean().tolist()


@pytest.mark.parametrize("module, what", [(ItemScale(), ".item()"), (ToList(), ".tolist()")])
def test_tensor_to_python_number_is_refused_with_the_line(module, what):
    with pytest.raises(TraceError) as info:
        compile(module, example_inputs=(torch.randn(2, 8),))
    message = str(info.value)
    assert what in message and "test_export_check.py:" in message and "\n" not in message


class Twice(torch.nn.Module):
    def forward(self, x):
        return 2 * x


class TwiceAtTheExample(torch.nn.Module):
    """Equal to Twice on the example only: what an export that baked a value in looks like."""

    def __init__(self, example):
        super().__init__()
        self.register_buffer("example", example.clone())

    def forward(self, x):
        return 2 * x + (x - self.example) ** 2


def test_export_is_checked_on_inputs_other_than_the_example():
    example = (torch.randn(2, 8),)
    exported = export_onnx(capture(Twice(), example), 17)
    assert check_export(exported, capture(Twice(), example))["perturbed_inputs"]["passed"]
    other = capture(TwiceAtTheExample(example[0]), example)
    with pytest.raises(VerificationError, match="matches it on example_inputs but not on other inputs"):
        check_export(exported, dataclasses.replace(other, outputs=capture(Twice(), example).outputs))
