"""Streaming histograms and the range estimators calibration picks from.

Memory is bounded by `max_bins` per tensor whatever the number of samples: bins sit on a grid
anchored at 0 with a power-of-two width, so when new data falls outside, the width doubles and
adjacent bins merge exactly (no re-binning error, no stored activations).
"""
from __future__ import annotations

import math

import numpy as np

from hewn.passes.quant.spec import QuantSpec

MAX_BINS = 2048


class StreamingHistogram:
    def __init__(self, max_bins: int = MAX_BINS):
        self.max_bins = max_bins
        self.width = 0.0                 # bin k covers [k * width, (k + 1) * width)
        self.first = 0                   # grid index of counts[0]
        self.counts = np.zeros(0, dtype=np.int64)
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.size
        if self.width == 0.0:
            span = max(hi - lo, abs(hi), abs(lo), 1e-30)
            self.width = 2.0 ** math.ceil(math.log2(span / (self.max_bins // 2)))
            self.first = math.floor(lo / self.width)
        while True:
            k_lo = min(self.first, math.floor(lo / self.width))
            k_hi = max(self.first + len(self.counts) - 1, math.floor(hi / self.width))
            if k_hi - k_lo + 1 <= self.max_bins:
                break
            self._coarsen()
        self._extend(k_lo, k_hi)
        idx = np.floor(x / self.width).astype(np.int64) - self.first
        np.clip(idx, 0, len(self.counts) - 1, out=idx)  # float rounding at the very edge
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def _coarsen(self) -> None:
        """Double the bin width: grid bin k joins bin floor(k / 2)."""
        new_first = self.first // 2
        last = (self.first + len(self.counts) - 1) // 2
        merged = np.zeros(last - new_first + 1, dtype=np.int64)
        ks = np.arange(self.first, self.first + len(self.counts)) // 2 - new_first
        np.add.at(merged, ks, self.counts)
        self.counts, self.first, self.width = merged, new_first, self.width * 2

    def _extend(self, k_lo: int, k_hi: int) -> None:
        before = self.first - k_lo
        after = k_hi - (self.first + len(self.counts) - 1)
        if before > 0 or after > 0:
            self.counts = np.concatenate([np.zeros(max(before, 0), np.int64), self.counts,
                                          np.zeros(max(after, 0), np.int64)])
            self.first = min(self.first, k_lo)

    def edges(self) -> np.ndarray:
        return (self.first + np.arange(len(self.counts) + 1)) * self.width

    def centers(self) -> np.ndarray:
        return (self.first + np.arange(len(self.counts)) + 0.5) * self.width


# ---------------------------------------------------------------- range estimators

def minmax_range(h: StreamingHistogram, spec: QuantSpec, **_) -> tuple[float, float]:
    return h.min, h.max


def percentile_range(h: StreamingHistogram, spec: QuantSpec, percentile: float = 99.99, **_) -> tuple[float, float]:
    """Clip the (100 - percentile)% most extreme values, split between the two tails."""
    cdf = np.cumsum(h.counts) / max(h.count, 1)
    tail = (100.0 - percentile) / 100.0
    if h.min < 0 < h.max:
        tail /= 2
    edges = h.edges()
    lo = edges[int(np.searchsorted(cdf, tail, side="right"))] if h.min < 0 else h.min
    hi = edges[int(np.searchsorted(cdf, 1 - tail, side="left")) + 1] if h.max > 0 else h.max
    return max(float(lo), h.min), min(float(hi), h.max)


def _abs_histogram(h: StreamingHistogram) -> tuple[np.ndarray, float]:
    """Counts of |x| on the same grid, from 0 upward (bins straddle nothing: the grid is anchored at 0)."""
    ks = np.arange(h.first, h.first + len(h.counts))
    mag = np.where(ks >= 0, ks, -ks - 1)
    out = np.zeros(int(mag.max()) + 1, dtype=np.int64)
    np.add.at(out, mag, h.counts)
    return out, h.width


def _clip_to_threshold(h: StreamingHistogram, t: float) -> tuple[float, float]:
    return max(h.min, -t), min(h.max, t)


def entropy_range(h: StreamingHistogram, spec: QuantSpec, **_) -> tuple[float, float]:
    """TensorRT's KL-divergence calibration on |x|: the threshold whose quantized distribution
    (128 levels) loses the least information."""
    counts, width = _abs_histogram(h)
    counts[0] = 0  # exact zeros (ReLU) quantize exactly; their spike would bias toward tiny thresholds
    levels = 128  # TensorRT's choice: thresholds are compared at 7-bit resolution
    n = len(counts)
    if n <= levels:
        return h.min, h.max
    best, best_kl = n, math.inf
    for i in np.unique(np.linspace(levels, n, num=min(n - levels + 1, 96)).astype(int)):
        kl = _kl_at(counts, i, levels)
        if kl < best_kl:
            best, best_kl = i, kl
    return _clip_to_threshold(h, best * width)


def _kl_at(counts: np.ndarray, i: int, levels: int) -> float:
    p = counts[:i].astype(np.float64).copy()
    p[i - 1] += counts[i:].sum()  # the clipped tail lands in the last bin
    nonzero = counts[:i] > 0
    q = np.zeros(i)
    for chunk in np.array_split(np.arange(i), levels):
        if chunk.size == 0:
            continue
        nz = nonzero[chunk]
        if nz.any():
            q[chunk[nz]] = counts[chunk].sum() / nz.sum()
    mask = p > 0
    if not mask.any() or q[mask].min() <= 0:
        return math.inf
    p, q = p[mask] / p.sum(), q[mask] / q[mask].sum()
    return float(np.sum(p * np.log(p / q)))


def mse_range(h: StreamingHistogram, spec: QuantSpec, **_) -> tuple[float, float]:
    """The clipping that minimizes the expected squared error of quantize-dequantize over the
    histogram: clipping error of the tails + uniform rounding noise (scale² / 12) inside."""
    centers, counts = h.centers(), h.counts.astype(np.float64)
    qmin, qmax = spec.qrange()
    best, best_err = (h.min, h.max), math.inf
    for alpha in np.linspace(0.05, 1.0, 96):
        lo, hi = h.min * alpha, h.max * alpha
        scale, _ = spec.params(lo, hi)
        lo_q, hi_q = min(lo, 0.0), max(hi, 0.0)
        clipped = np.clip(centers, lo_q, hi_q)
        err = float(np.sum(counts * (centers - clipped) ** 2) + float(scale) ** 2 / 12 * counts.sum())
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


ESTIMATORS = {"minmax": minmax_range, "percentile": percentile_range, "entropy": entropy_range, "mse": mse_range}
