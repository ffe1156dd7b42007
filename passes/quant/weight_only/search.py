"""Weight-only compression of an exported causal LM under one perplexity budget.

1. Calibration statistics, streamed over the calibration windows in ORT: X^T X of every
   quantizable MatMul's input (its Hessian), and how much int8 quantization of that input per
   block costs (what MatMulNBits' accuracy_level 4 does inside the kernel).
2. Each layer gets a ladder of options (bits, block), measured on this machine (kernels.py): each
   rung is cheaper to run than the one above (a 128-token prefill plus 128 decode steps; tables,
   which are lookups, go by size), starting from the most accurate (8-bit, block 32). Every rung
   is quantized: 8-bit by range search against the Hessian's diagonal (block_quant.py), 4-bit by
   GPTQ (gptq.py). A rung's error is the relative error of the layer's outputs on calibration
   data: the weights' (through the Hessian) plus the activations' when the kernel quantizes them.
3. Steps down the ladders are taken in order of the error they lead to; how many is found by
   bisection on measured perplexity: the most within `budget` (relative increase over the float
   model's perplexity on the same windows). The calibration windows are split: statistics from
   the first half, perplexity checks on the second, so the search does not grade GPTQ on the
   data GPTQ fitted (unsplit, a +9% calibration result on Gemma-3 had been +22% on held-out text).

The float model is read once; every candidate is built from packed quantized tensors only.
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from hewn.core import progress
from hewn.core.errors import ConfigError
from hewn.core.runtime import file_session, release_memory
from hewn.core.kv_cache import CacheLayout, Decoder, float_perplexity, split_windows
from hewn.passes.quant.weight_only.kernels import KernelCosts
from hewn.passes.quant.weight_only.block_quant import quantize
from hewn.passes.quant.weight_only.gptq import COLUMNS, gptq, output_error
from hewn.passes.quant.weight_only.rewrite import Choice, find_targets, rewrite, weight_nk
from hewn.passes.quant.weight_only.stats import activation_stats
from onnx import external_data_helper


@dataclass(frozen=True)
class WeightConfig:
    budget: float = 0.05                     # allowed perplexity increase, relative (0.05 = +5%)
    options: tuple = ((8, 32), (8, 128), (4, 32), (4, 128))   # (bits, block) MatMul weights may take
    table_options: tuple = ((8, 128), (4, 32))                # for embedding tables (lookups)
    gptq: bool = True                        # 4-bit MatMul weights rounded by GPTQ (else range search only)
    threads: int = 2

    def __post_init__(self) -> None:
        for bits, block in (*self.options, *self.table_options):
            if bits not in (4, 8) or block < 16 or block & (block - 1):
                raise ConfigError(f"weight option ({bits} bits, block {block}): bits must be 4 or 8 and the "
                                  f"block a power of two >= 16")
        if not 0 <= self.budget < 10:
            raise ConfigError(f"perplexity budget must be a relative increase in [0, 10), got {self.budget}")


@dataclass
class WeightPlan:
    model: onnx.ModelProto
    report: dict = field(default_factory=dict)


@dataclass
class Packed:
    """A quantized weight as rewrite() emits it; 4-bit values two a byte (half the memory of Blocks)."""
    bits: int
    block: int
    data: np.ndarray
    scale: np.ndarray
    zeros: np.ndarray

    @classmethod
    def of(cls, blocks) -> Packed:
        return cls(blocks.bits, blocks.block, blocks.packed(), blocks.scale, blocks.packed_zero())

    def packed(self) -> np.ndarray:
        return self.data

    def packed_zero(self) -> np.ndarray:
        return self.zeros

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.scale.nbytes + self.zeros.nbytes


@dataclass
class Rung:
    """One option of one layer: its quantized weight, kernel (with its measured times) and error."""
    packed: Packed
    choice: Chosen
    error: float          # relative squared error of the layer's outputs (tables: of the weights)
    method: str


class Prepared:
    """Everything the search needs, computed once: float perplexity, every layer's ladder.
    choose() then runs per budget."""

    def __init__(self, float_path: str, layout: CacheLayout, calib: list[np.ndarray], config: WeightConfig, say,
                 float_ppl: float | None = None):
        if not calib:
            raise ConfigError("weight compression needs calibration text: at least one window of token ids")
        started = time.perf_counter()
        self.layout, self.calib, self.config, self.say = layout, calib, config, say
        self.stats_windows, self.check_windows = split_windows(calib)
        # the budget is relative to the user's float model (given: measured before any rewrite)
        self.float_ppl = float_perplexity(float_path, layout, calib, config.threads) if float_ppl is None else float_ppl
        folder = str(Path(float_path).resolve().parent)
        model = onnx.load(float_path, load_external_data=False)   # weights stay on disk until each is quantized
        targets, self.skipped = find_targets(model, base_dir=folder)
        if not targets:
            raise ConfigError("no MatMul with a constant weight and no constant embedding table: nothing to compress")
        say(f"{len(targets)} weights; float perplexity {self.float_ppl:.3f} on {len(self.check_windows)} check windows")
        stats = activation_stats(model, folder, [t.input for t in targets if t.kind == "matmul"], layout, self.stats_windows, config.threads)
        inits = {i.name: i for i in model.graph.initializer}
        costs = KernelCosts(config.threads)
        self.ladders: dict[str, list[Rung]] = {}
        self.rows = []
        uses = Counter(t.input for t in targets)
        for t in progress.bar(targets, desc="weight ladders", unit="weight"):
            uses[t.input] -= 1
            h, act = stats.get(t.input, (None, {})) if t.kind == "matmul" else (None, {})
            if not uses[t.input]:   # its last reader: a down_proj Hessian is 34 MB of float64
                stats.pop(t.input, None)
            ladder = _ladder(costs, t, config)
            if not ladder:
                self.skipped.append({"node": t.node, "reason": f"K={t.k} has no block of 16 or more dividing it; left float"})
                continue
            w = weight_nk(inits, t, folder)
            rungs = []
            for choice in ladder:
                blocks, err = _quantize(w, choice.bits, choice.block, h, gptq_rounding=config.gptq and choice.bits == 4)
                if choice.accuracy_level == 4:  # the kernel quantizes activations per block too
                    err += act.get(choice.block, 0.0)
                method = "gptq" if (h is not None and config.gptq and choice.bits == 4) else "range search"
                rungs.append(Rung(Packed.of(blocks), choice, err, method))
                del blocks
            self.ladders[t.node] = rungs
            self.rows.append({"node": t.node, "kind": t.kind, "shape": [t.k, t.n], "tied_to": t.tied_to,
                              "options": [{"bits": r.choice.bits, "block": r.choice.block, "accuracy_level": r.choice.accuracy_level,
                                           "error": r.error, "method": r.method, "bytes": r.packed.nbytes,
                                           "kernel_ms": {m: round(v * 1e3, 4) for m, v in r.choice.times.items()}}
                                          for r in rungs]})
            del w
        costs.save()
        self.kernel_costs = costs.summary()
        self.by_node = {t.node: t for t in targets}
        del inits
        _drop(model, {self.by_node[n].weight for n in self.ladders})  # candidates take them from the ladders
        for tensor in model.graph.initializer:   # what is left (norms, small constants) comes inline
            if external_data_helper.uses_external_data(tensor):
                external_data_helper.load_external_data_for_tensor(tensor, folder)
                tensor.data_location = onnx.TensorProto.DEFAULT
                del tensor.external_data[:]
        self.model = model
        self.seconds = time.perf_counter() - started
        self.base_ppl = self.perplexity({})
        say(f"most accurate options: perplexity {self.base_ppl:.3f}")

    def build(self, steps: dict[str, int]) -> onnx.ModelProto:
        """The model with each layer at rung `steps.get(layer, 0)` of its ladder."""
        rungs = {n: ladder[steps.get(n, 0)] for n, ladder in self.ladders.items()}
        return rewrite(self.model, [self.by_node[n] for n in rungs], {n: r.packed for n, r in rungs.items()},
                       {n: r.choice for n, r in rungs.items()})

    def perplexity(self, steps: dict[str, int]) -> float:
        with tempfile.TemporaryDirectory(prefix="hewn-llm-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            onnx.save(self.build(steps), path)
            ppl = Decoder(file_session(str(path), threads=self.config.threads), self.layout).perplexity(self.check_windows)
        release_memory()
        return ppl

    def moves(self) -> list[tuple[str, int]]:
        """Every step down every ladder, in order of the error it leads to; a layer's steps in order."""
        moves = [(r.error, n, i) for n, ladder in self.ladders.items() for i, r in enumerate(ladder) if i]
        moves.sort(key=lambda m: (m[0], m[2]))
        return [(n, i) for _, n, i in moves]

    def choose(self, budget: float | None = None) -> WeightPlan:
        """The longest prefix of moves() whose calibration perplexity stays within `budget`."""
        started = time.perf_counter()
        budget = self.config.budget if budget is None else budget
        limit = self.float_ppl * (1 + budget)
        moves = self.moves()
        probes = [{"moves": 0, "perplexity": self.base_ppl}]
        taken = 0
        if self.base_ppl <= limit:
            lo, hi = 0, len(moves)      # invariant: the first `lo` pass; more than `hi` fail
            while lo < hi:
                mid = (lo + hi + 1) // 2
                ppl = self.perplexity(_steps(moves[:mid]))
                probes.append({"moves": mid, "perplexity": ppl})
                self.say(f"{mid} of {len(moves)} steps: perplexity {ppl:.3f} (limit {limit:.3f})")
                if ppl <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            taken = lo
        steps = _steps(moves[:taken])
        rows = []
        for r in self.rows:
            rung = self.ladders[r["node"]][steps.get(r["node"], 0)]
            rows.append({**r, "bits": rung.choice.bits, "block": rung.choice.block,
                         "accuracy_level": rung.choice.accuracy_level, "error": rung.error, "method": rung.method,
                         "kernel_ms": {m: round(v * 1e3, 4) for m, v in rung.choice.times.items() if m != "cost"}})
        ppl = next(p["perplexity"] for p in probes if p["moves"] == taken)
        report = {"float_perplexity": self.float_ppl, "perplexity": ppl, "budget": budget, "limit": limit,
                  "calibration_windows": len(self.calib), "calibration_tokens": int(sum(len(w) for w in self.calib)),
                  "statistics_windows": len(self.stats_windows), "check_windows": len(self.check_windows),
                  "probes": probes, "moves_taken": taken, "moves": len(moves), "layers": rows, "left_float": self.skipped,
                  "bits": {str(b): sum(1 for r in rows if r["bits"] == b) for b in (4, 8)},
                  "kernel_ms": {m: round(sum(r["kernel_ms"].get(m, 0.0) for r in rows), 3) for m in ("decode", "prefill")},
                  "kernel_costs": self.kernel_costs,
                  "seconds": round(self.seconds + time.perf_counter() - started, 1)}
        if self.base_ppl > limit:
            report["over_budget"] = (f"even the most accurate options raise perplexity to {self.base_ppl:.3f} "
                                     f"(limit {limit:.3f}); returned with them")
        return WeightPlan(self.build(steps), report)


def compress(float_path: str, layout: CacheLayout, calib: list[np.ndarray], config: WeightConfig = WeightConfig(),
             progress=None) -> WeightPlan:
    """The compressed model and its report (see the module doc)."""
    return Prepared(float_path, layout, calib, config, progress or (lambda msg: None)).choose()


def _steps(moves: list[tuple[str, int]]) -> dict[str, int]:
    steps: dict[str, int] = {}
    for n, i in moves:
        steps[n] = max(steps.get(n, 0), i)
    return steps


@dataclass
class Chosen(Choice):
    times: dict = field(default_factory=dict)


def _ladder(costs: KernelCosts, t, config: WeightConfig) -> list[Chosen]:
    """The options of one layer, most accurate first, each kept only when it is cheaper than the
    rung above it: measured kernel cost for MatMuls, bytes for tables."""
    options = config.table_options if t.kind == "gather" else config.options
    seen, fitted = set(), []
    for bits, block in options:
        b = fit_block(t.k, block)
        if b and (bits, b) not in seen:
            seen.add((bits, b))
            fitted.append((bits, b))
    if t.kind == "gather":
        fitted.sort(key=lambda o: (-o[0], o[1]))   # size falls down the list: 8-bit first, then 4-bit
        return [Chosen(bits, block, 0, {}) for bits, block in fitted]
    costs.measure_shape(t.k, t.n, [(bits, block, level) for bits, block in fitted for level in (0, 4)])
    ladder: list[Chosen] = []
    for bits, block in fitted:
        level, times = costs.best_level(t.k, t.n, bits, block)
        c = Chosen(bits, block, level, times)
        if not ladder or times["cost"] < ladder[-1].times["cost"]:
            ladder.append(c)
    return ladder


def _quantize(w: np.ndarray, bits: int, block: int, hessian, gptq_rounding: bool):
    """(blocks, relative error): the error of the layer's outputs on calibration data when its
    Hessian is known (MatMul), else of the weights (a table)."""
    if hessian is None:
        return quantize(w, bits, block)
    if gptq_rounding and COLUMNS % block == 0:
        return gptq(w, hessian, bits, block)
    blocks, _ = quantize(w, bits, block, importance=np.diag(hessian))
    return blocks, output_error(w, blocks, hessian)


def fit_block(k: int, block: int) -> int:
    """The block itself when it divides K, else the largest smaller power of two (>= 16) that does; 0 if none."""
    while block >= 16 and k % block:
        block //= 2
    return block if block >= 16 else 0


def _drop(model: onnx.ModelProto, names: set[str]) -> None:
    keep = [i for i in model.graph.initializer if i.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


__all__ = ["Prepared", "WeightConfig", "WeightPlan", "compress"]
