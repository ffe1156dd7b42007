"""Low-rank factorization, IR-neutral: W (out x in) ~= U_k (k columns) @ V_k (k rows).

The singular values are split evenly (U sqrt(S), sqrt(S) V) so both factors have comparable
scale (better conditioned for int8 and for fine-tuning than U, S V). A split costs k (m + n)
MACs per position against m n, so it pays only when k < m n / (m + n); `worth_it` asks for a
margin below that, because two kernels launch instead of one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import numpy as np

from hewn.core.errors import ConfigError
from hewn.core.fields import check_fields

RankSpec = Union[int, float, None]


@dataclass(frozen=True)
class SVDConfig:
    """How each factorizable node gets its rank: `ranks` (per node, the planner's choice; when
    given, only those nodes are split) first,
    then `rank` (an int, or a float in (0, 1]: a share of the full rank), then `energy`
    (smallest rank keeping this share of sum(s^2))."""

    rank: RankSpec = None
    energy: float = 0.9
    ranks: Mapping[str, int] = field(default_factory=dict)
    margin: float = 0.8          # split only when split MACs <= margin * original MACs
    round_to: int = 8            # ranks are rounded up to a multiple of this (kernel-friendly widths)
    min_params: int = 4096       # smaller weights are left alone: the saving cannot pay for a launch
    ops: tuple = ("Gemm", "MatMul", "Conv")
    exclude: tuple = ()          # node/module names or globs (hewn.core.names) never split

    def __post_init__(self) -> None:  # validated at construction
        check_fields(self)
        if isinstance(self.rank, bool) or (self.rank is not None and not isinstance(self.rank, (int, float))):
            raise ConfigError(f"svd rank must be an int, a float in (0, 1] or None, got {self.rank!r}")
        if isinstance(self.rank, float) and not 0 < self.rank <= 1:
            raise ConfigError(f"svd rank as a float is a share of the full rank, in (0, 1]; got {self.rank}")
        if isinstance(self.rank, int) and self.rank < 1:
            raise ConfigError(f"svd rank must be >= 1, got {self.rank}")
        if not 0 < self.energy <= 1:
            raise ConfigError(f"svd energy must be in (0, 1], got {self.energy}")
        if self.margin <= 0:
            raise ConfigError(f"svd margin must be > 0, got {self.margin}")
        if self.round_to < 1:
            raise ConfigError(f"svd round_to must be >= 1, got {self.round_to}")


def config_ranks_skip(config: SVDConfig, name: str) -> bool:
    """With per-node `ranks` (the planner's), only the named nodes are split."""
    return bool(config.ranks) and name not in config.ranks


def svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return u, s, vt


def factors(u: np.ndarray, s: np.ndarray, vt: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(A: m x k, B: k x n) with A @ B the best rank-k approximation of U S Vt."""
    root = np.sqrt(s[:k])
    return u[:, :k] * root[None, :], root[:, None] * vt[:k]


def energy_rank(s: np.ndarray, energy: float) -> int:
    total = float((s ** 2).sum())
    if total == 0:
        return 1
    kept = np.cumsum(s ** 2) / total
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, len(s)))


def break_even(m: int, n: int) -> float:
    return m * n / (m + n)


def worth_it(m: int, n: int, k: int, margin: float) -> bool:
    return k * (m + n) <= margin * m * n


def pick_rank(name: str, s: np.ndarray, config: SVDConfig) -> int:
    full = len(s)
    if name in config.ranks:
        k = int(config.ranks[name])
    elif isinstance(config.rank, float):
        k = math.ceil(config.rank * full)
    elif isinstance(config.rank, int):
        k = config.rank
    else:
        k = energy_rank(s, config.energy)
    if name not in config.ranks and config.round_to > 1:
        k = math.ceil(k / config.round_to) * config.round_to
    return max(1, min(k, full))


def relative_error(s: np.ndarray, k: int) -> float:
    """||W - W_k||_F / ||W||_F from the singular values."""
    total = float((s ** 2).sum())
    return math.sqrt(float((s[k:] ** 2).sum()) / total) if total > 0 else 0.0


def conv_matrix(w: np.ndarray) -> np.ndarray:
    """A conv weight (out, in, kh, kw) as the matrix (out, in*kh*kw) that a k x k conv with r
    filters followed by a 1x1 conv factors (channel low-rank)."""
    return w.reshape(w.shape[0], -1)


def rank_options(full: int, fractions=(0.125, 0.25, 0.5), round_to: int = 8) -> list[int]:
    out = sorted({max(1, min(full, math.ceil(f * full / round_to) * round_to)) for f in fractions})
    return [k for k in out if k < full]


def explicit_rank(spec: RankSpec) -> Optional[int]:
    return spec if isinstance(spec, int) and not isinstance(spec, bool) else None
