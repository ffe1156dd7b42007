"""DistillConfig: how distillation trains (no torch import, so `hewn.DistillConfig` is cheap)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from hewn.core.errors import ConfigError
from hewn.core.fields import check_fields


@dataclass(frozen=True)
class DistillConfig:
    steps: Optional[int] = None          # optimizer steps; or
    epochs: Optional[int] = None         # passes over train_data (default: 1 epoch when neither is set)
    lr: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 2.0
    alpha: float = 1.0                   # output loss weight; 1 - alpha goes to the feature pairs
    loss: str = "auto"                   # "auto", "kl", "cosine", "mse"
    feature_pairs: Optional[Sequence] = None   # [(student module, teacher module)] or "auto"
    seed: int = 0
    eval_every: int = 50                 # steps between early-stop checks
    on_step: Optional[Callable] = None   # on_step(step, loss) -> True to stop early
    progress: bool = True

    def __post_init__(self) -> None:  # validated at construction
        check_fields(self)
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"DistillConfig.steps must be a positive int, got {self.steps!r}")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ConfigError(f"DistillConfig.epochs must be a positive int, got {self.epochs!r}")
        if not self.lr > 0:
            raise ConfigError(f"DistillConfig.lr must be > 0, got {self.lr}")
        if self.temperature <= 0:
            raise ConfigError(f"DistillConfig.temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"DistillConfig.alpha must be in [0, 1], got {self.alpha}")
        if self.loss not in ("auto", "kl", "cosine", "mse"):
            raise ConfigError(f"DistillConfig.loss must be 'auto', 'kl', 'cosine' or 'mse', got {self.loss!r}")
