"""Reference models for tests and benchmarks: small, deterministic, plain torch (no torchvision).

`REFERENCE_MODELS[name]()` returns `(module in eval mode, example_inputs tuple)`.
"""
from __future__ import annotations

from typing import Callable

import torch

from hewn.models.bert import BertEncoder
from hewn.models.mlp import MLP
from hewn.models.mobilenetv2 import MobileNetV2
from hewn.models.resnet import ResNet18, resnet8, resnet20


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BatchNorm layers non-trivial statistics so that BN folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def _seeded(build: Callable[[], torch.nn.Module], *shapes, seed: int = 0):
    torch.manual_seed(seed)
    model = randomize_batchnorm(build(), seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    return model, tuple(torch.randn(*s, generator=gen) for s in shapes)


def _bert(seed: int = 0):
    torch.manual_seed(seed)
    model = BertEncoder().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, 1000, (1, 16), generator=gen)
    mask = torch.ones(1, 16, dtype=torch.int64)
    mask[0, 12:] = 0
    return model, (ids, mask)


def _digits():
    from hewn.models.digits import digits_cnn

    model, data = digits_cnn()
    return model, (torch.from_numpy(data.x_test[:1]),)


def _minilm():
    from hewn.models.minilm import encode, load_minilm, sentences

    model, tokenizer = load_minilm()
    return model, encode(tokenizer, sentences()[:1])


REFERENCE_MODELS: dict[str, Callable[[], tuple]] = {
    "resnet20": lambda: _seeded(resnet20, (1, 3, 32, 32)),
    "resnet18": lambda: _seeded(ResNet18, (1, 3, 224, 224)),
    "mobilenetv2": lambda: _seeded(MobileNetV2, (1, 3, 224, 224)),
    "mlp": lambda: _seeded(MLP, (4, 64)),
    "bert": _bert,
    "digits_cnn": _digits,
    "minilm": _minilm,
}

__all__ = ["REFERENCE_MODELS", "randomize_batchnorm", "BertEncoder", "MLP", "MobileNetV2", "ResNet18",
           "resnet8", "resnet20"]
