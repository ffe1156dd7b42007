"""A plain MLP: Linear/BatchNorm1d/ReLU/Dropout stacks (exercises Gemm + BN folding)."""
from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    def __init__(self, sizes=(64, 256, 128, 10), dropout: float = 0.1):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers += [nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
