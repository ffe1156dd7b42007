"""One wording for speed everywhere (CLI, report, bench): "1.45x faster" / "1.30x slower", from
latencies, never a bare ratio whose direction the reader has to guess."""
from __future__ import annotations

import math

SAME = 0.03   # within 3%: "about the same speed" (timing noise on a shared machine is of that order)


def speed_words(before_ms: float, after_ms: float, spread: float = 0.0) -> str:
    """Within max(SAME, the measured relative spread) either way is "about the same speed": a
    1.10x from timings spread 28% is noise, not a gain."""
    if not (before_ms > 0 and after_ms > 0) or not (math.isfinite(before_ms) and math.isfinite(after_ms)):
        return "speed not measured"
    ratio = before_ms / after_ms
    if not (is_faster(before_ms, after_ms, spread) or is_slower(before_ms, after_ms, spread)):
        return f"about the same speed ({ratio:.2f}x)"
    return f"{ratio:.2f}x faster" if ratio > 1 else f"{1 / ratio:.2f}x slower"


def compared_to(before_ms: float, after_ms: float, what: str) -> str:
    """speed_words against something named: "1.45x faster than float", "about the same speed
    (1.02x) as float"."""
    words = speed_words(before_ms, after_ms)
    return f"{words} {'than' if words.endswith(('faster', 'slower')) else 'as'} {what}"


def is_faster(before_ms: float, after_ms: float, spread: float = 0.0) -> bool:
    """Faster beyond noise: the mirror of is_slower."""
    return before_ms > after_ms * (1.0 + max(SAME, spread))


def is_slower(before_ms: float, after_ms: float, spread: float = 0.0) -> bool:
    """Slower beyond noise: by more than SAME and more than the measured spread (relative)."""
    return after_ms > before_ms * (1.0 + max(SAME, spread))


def ratio_interval(before: list, after: list, quantile: float = 0.2, resamples: int = 400) -> tuple[float, float, float]:
    """(ratio, low, high): after/before of each session's `quantile` latency, with a ~95% bootstrap
    interval. A low quantile, not the median: on a machine other jobs load, most runs are slowed by
    them in bursts, and the fast runs are the ones that measured the model (paired per-run ratios
    of medians flipped the int8 decision of PP-OCRv4 recognition 3 to 2 over five loaded runs)."""
    import numpy as np

    b, a = np.asarray(before, float), np.asarray(after, float)
    if b.size == 0 or a.size == 0 or not (b > 0).all():
        return math.nan, math.nan, math.nan
    ratio = float(np.quantile(a, quantile) / np.quantile(b, quantile))
    rng = np.random.default_rng(0)
    boot = np.quantile(a[rng.integers(0, a.size, (resamples, a.size))], quantile, axis=1) / \
        np.quantile(b[rng.integers(0, b.size, (resamples, b.size))], quantile, axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return ratio, float(low), float(high)
