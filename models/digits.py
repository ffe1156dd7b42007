"""The real-data reference: a ResNet-8 trained on sklearn's bundled 8x8 digits.

Trained once with a fixed seed (< 1 minute on 2 cores) and cached outside the repository in
$HEWN_CACHE (default ~/.cache/hewn); re-trained when the cache is absent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hewn.models.resnet import resnet8

SEED = 0
EPOCHS = 40
CACHE_NAME = f"digits_resnet8_seed{SEED}_e{EPOCHS}_v1.pt"


@dataclass
class DigitsData:
    x_train: np.ndarray  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def cache_dir() -> Path:
    path = Path(os.environ.get("HEWN_CACHE", Path.home() / ".cache" / "hewn"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_data() -> DigitsData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    return DigitsData(x_tr, y_tr, x_te, y_te)


def train(model: torch.nn.Module, data: DigitsData, epochs: int = EPOCHS, seed: int = SEED) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * ((len(x) + 63) // 64))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            batch = x[idx]
            # light augmentation: random 1-pixel shifts keep the tiny net from memorizing
            shift = int(torch.randint(-1, 2, (1,), generator=gen))
            batch = torch.roll(batch, shifts=shift, dims=3)
            loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    """`predict(batch) -> logits` over the whole set; fraction correct."""
    logits = np.concatenate([np.asarray(predict(x[i:i + 64])) for i in range(0, len(x), 64)])
    return float((logits.argmax(1) == y).mean())


def digits_cnn(retrain: bool = False) -> tuple[torch.nn.Module, DigitsData]:
    """The trained ResNet-8 (eval mode) and its data split."""
    data = load_data()
    model = resnet8(in_channels=1, num_classes=10)
    path = cache_dir() / CACHE_NAME
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), data
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = resnet8(in_channels=1, num_classes=10)
        train(model, data)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, data
