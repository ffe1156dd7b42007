"""Measured cost of MatMulNBits on this machine: one-node models timed in ORT for a layer's shape,
at decode (1 row) and prefill (PREFILL rows), per accuracy level, cached per machine and ORT
version. The weight-bits planner picks each layer's accuracy_level from these numbers, not from
a rule: on the machine this was written on, level 4 (int8 activations inside the kernel) made a
4-bit decode 3x faster, while at 128 rows block-32 4-bit was faster at level 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from hewn.core.runtime import run, session_options, watched
from onnx import TensorProto, helper, numpy_helper

PREFILL = 128
MAX_N = 16384   # wider layers (a 262k-token lm_head) are timed at this width and scaled: time ~ N
DECODE_WEIGHT = PREFILL  # cost = prefill(PREFILL rows) + PREFILL decode steps: a prompt and as many new tokens


def machine_cache_path(kind: str) -> Path:
    """A cache of measured times, keyed by everything they depend on: ORT, the CPU model and its
    core count (a cache from another machine or ORT must not choose this one's kernels)."""
    base = Path(os.environ.get("HEWN_CACHE", Path.home() / ".cache" / "hewn"))
    cpu = hashlib.sha256(_cpu_model().encode()).hexdigest()[:8]
    return base / f"{kind}-{ort.__version__}-{platform.machine()}-{cpu}-{os.cpu_count()}.json"


def read_table(path: Path) -> dict:
    """A cache of measured times as written by write_table; {} when absent, unreadable or not a
    JSON object (callers drop the entries they cannot use: an edited or corrupt cache is re-measured)."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def write_table(path: Path, table: dict) -> None:
    """Write the cache atomically (a temporary file renamed over it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=0))
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs a re-measure next time


def _cache_path() -> Path:
    return machine_cache_path("kernels-v2")   # v2: variants timed together


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _valid_row(row) -> bool:
    return isinstance(row, dict) and set(row) >= {"decode", "prefill"} and all(
        isinstance(row[m], (int, float)) and not isinstance(row[m], bool) and 0 < row[m] < 10 for m in ("decode", "prefill"))


def _model(k: int, n: int, bits: int, block: int, level: int):
    rng = np.random.default_rng(0)
    nb = k // block
    q = rng.integers(0, 256, (n, nb, block * bits // 8), dtype=np.uint8)
    inits = [numpy_helper.from_array(q, "B"),
             numpy_helper.from_array(rng.random(n * nb).astype(np.float32) * 0.01, "S"),
             numpy_helper.from_array(rng.integers(0, 256, n * ((nb * bits + 7) // 8), dtype=np.uint8), "Z")]
    node = helper.make_node("MatMulNBits", ["A", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=bits, block_size=block, accuracy_level=level)
    g = helper.make_graph([node], "kernel", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _session(model, threads: int):
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def _time_together(models: dict, k: int, threads: int, decode_rounds: int = 25, prefill_rounds: int = 9) -> dict:
    """{key: {"decode": s, "prefill": s}}: every variant of one shape timed round-robin, so a busy
    moment of the machine lands on all of them alike; medians."""
    sessions = {key: _session(m, threads) for key, m in models.items()}
    rng = np.random.default_rng(1)
    feeds = {"decode": rng.standard_normal((1, k)).astype(np.float32),
             "prefill": rng.standard_normal((PREFILL, k)).astype(np.float32)}
    times = {key: {"decode": [], "prefill": []} for key in sessions}
    for mode, rounds in (("decode", decode_rounds), ("prefill", prefill_rounds)):
        for s in sessions.values():  # warm-up: time-limited, Ctrl-C works
            run(s, None, {"A": feeds[mode]})
        for _ in range(rounds):
            for key, s in sessions.items():
                t = time.perf_counter()
                watched(s, None, {"A": feeds[mode]})
                times[key][mode].append(time.perf_counter() - t)
    return {key: {m: float(np.median(v)) for m, v in t.items()} for key, t in times.items()}


class KernelCosts:
    """Seconds for a layer [K -> N] as MatMulNBits(bits, block, level)."""

    def __init__(self, threads: int = 2, path: Path | None = None):
        self.threads, self.path = threads, path or _cache_path()
        table = read_table(self.path)
        # an entry that is not two positive times (an edited or corrupt cache) is measured again
        self.table = {k: {m: float(v) for m, v in row.items() if m in ("decode", "prefill")}
                      for k, row in table.items() if isinstance(k, str) and _valid_row(row)}
        self.rejected = len(table) - len(self.table)
        self.cached = len(self.table)
        self.measured = 0

    def summary(self) -> dict:
        """Where the plan's kernel times came from, for the report."""
        return {"cache": str(self.path), "entries_read": self.cached, "entries_rejected": self.rejected,
                "measured_now": self.measured}

    def _key(self, k: int, n: int, bits, block: int, level: int) -> str:
        return f"{k}x{min(n, MAX_N)}:{bits}:{block}:{level}:t{self.threads}"

    def cost(self, k: int, n: int, bits: int, block: int, level: int) -> dict:
        """{"decode": s, "prefill": s, "cost": prefill + DECODE_WEIGHT * decode} at width n."""
        key = self._key(k, n, bits, block, level)
        if key not in self.table:
            self.measure_shape(k, n, [(bits, block, level)])
        scale = n / min(n, MAX_N)
        row = {m: v * scale for m, v in self.table[key].items()}
        row["cost"] = row["prefill"] + DECODE_WEIGHT * row["decode"]
        return row

    def measure_shape(self, k: int, n: int, variants: list[tuple]) -> None:
        """Time the variants (bits, block, level) of one layer shape that are not cached yet, together."""
        width = min(n, MAX_N)
        todo = {self._key(k, n, *v): _model(k, width, *v) for v in variants if self._key(k, n, *v) not in self.table}
        if todo:
            self.table.update(_time_together(todo, k, self.threads))
            self.measured += len(todo)

    def best_level(self, k: int, n: int, bits: int, block: int) -> tuple[int, dict]:
        """The accuracy level (0 or 4) of lower measured cost for this layer, and its times."""
        rows = {level: self.cost(k, n, bits, block, level) for level in (0, 4)}
        level = min(rows, key=lambda lv: rows[lv]["cost"])
        return level, rows[level]

    def save(self) -> None:
        if self.measured:
            write_table(self.path, self.table)


__all__ = ["PREFILL", "KernelCosts"]
