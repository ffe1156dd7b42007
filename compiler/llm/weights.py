"""Weight-only compression of an exported causal LM under one perplexity budget.

1. Hessians: X^T X of every quantizable MatMul's input, streamed over calibration windows in ORT.
2. Every weight is quantized twice: at the base choice (8-bit, block 32; ranges searched against
   the Hessian's diagonal, block_quant.py) and at the low one (4-bit, block 32, GPTQ rounding,
   gptq.py). Errors are the relative error of the layer's outputs on calibration data (tables:
   of the weights). Each layer's accuracy_level is picked from measured kernel times (kernels.py).
3. Layers move to the low choice in order of error per byte saved; how many is found by
   bisection on measured perplexity of the calibration windows, the largest count within
   `budget` (relative increase over the float model's perplexity on the same windows).

The float model is read once; candidates are built from the quantized tensors only.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from hewn.core.errors import ConfigError
from hewn.core.runtime import file_session
from hewn.frontends.causal_lm import CacheLayout
from hewn.llm.decode import Decoder
from hewn.llm.kernels import KernelCosts
from hewn.passes.quant.block_quant import quantize
from hewn.passes.quant.gptq import COLUMNS, gptq, output_error
from hewn.passes.quant.weight_only import Choice, find_targets, rewrite, weight_nk


@dataclass(frozen=True)
class WeightConfig:
    budget: float = 0.05                     # allowed perplexity increase, relative (0.05 = +5%)
    base: tuple[int, int] = (8, 32)          # (bits, block) every layer gets at least
    low: tuple[int, int] | None = (4, 32)    # (bits, block) layers move to while the budget holds; None: base only
    gptq: bool = True                        # low-bit MatMul weights rounded by GPTQ (else range search only)
    threads: int = 2

    def __post_init__(self) -> None:
        for bits, block in filter(None, (self.base, self.low)):
            if bits not in (4, 8) or block < 16 or block & (block - 1):
                raise ConfigError(f"weight choice ({bits} bits, block {block}): bits must be 4 or 8 and the "
                                  f"block a power of two >= 16")
        if not 0 <= self.budget < 10:
            raise ConfigError(f"perplexity budget must be a relative increase in [0, 10), got {self.budget}")


@dataclass
class WeightPlan:
    model: onnx.ModelProto
    report: dict = field(default_factory=dict)


class Prepared:
    """Everything the bits search needs, computed once: float perplexity, both quantizations of
    every weight, their kernels. choose() then runs per budget."""

    def __init__(self, float_path: str, layout: CacheLayout, calib: list[np.ndarray], config: WeightConfig, say):
        if not calib:
            raise ConfigError("weight compression needs calibration text: at least one window of token ids")
        started = time.perf_counter()
        self.layout, self.calib, self.config, self.say = layout, calib, config, say
        self.float_ppl = Decoder(file_session(float_path, threads=config.threads), layout).perplexity(calib)
        model = onnx.load(float_path)
        targets, self.skipped = find_targets(model)
        if not targets:
            raise ConfigError("no MatMul with a constant weight and no constant embedding table: nothing to compress")
        say(f"{len(targets)} weights; float perplexity {self.float_ppl:.3f} on {len(calib)} calibration windows")
        hessians = activation_hessians(model, [t.input for t in targets if t.kind == "matmul"], layout, calib, config.threads)
        inits = {i.name: i for i in model.graph.initializer}
        costs = KernelCosts(config.threads)
        self.rows, self.base, self.low = [], {}, {}
        for t in targets:
            w = weight_nk(inits, t)
            h = hessians.get(t.input) if t.kind == "matmul" else None
            fits = [fit_block(t.k, c[1]) for c in filter(None, (config.base, config.low))]
            if not all(fits):
                self.skipped.append({"node": t.node, "reason": f"K={t.k} has no block of 16 or more dividing it; left float"})
                continue
            self.base[t.node], base_err = _quantize(w, config.base[0], fits[0], h, gptq_rounding=False)
            row = {"node": t.node, "kind": t.kind, "shape": [t.k, t.n], "base_error": base_err, "tied_to": t.tied_to,
                   "low_method": "gptq" if (h is not None and config.gptq) else "search"}
            if config.low:
                self.low[t.node], row["low_error"] = _quantize(w, config.low[0], fits[1], h, gptq_rounding=config.gptq)
                row["bytes_saved"] = self.base[t.node].nbytes - self.low[t.node].nbytes
            self.rows.append(row)
            del w
        self.choices_base = {r["node"]: _choice(costs, r, self.base[r["node"]]) for r in self.rows}
        self.choices_low = {r["node"]: _choice(costs, r, self.low[r["node"]]) for r in self.rows} if config.low else {}
        costs.save()
        self.by_node = {t.node: t for t in targets}
        del inits
        _drop(model, {self.by_node[n].weight for n in self.base})  # candidates take them from base/low
        self.model = model
        self.seconds = time.perf_counter() - started
        self.base_ppl = self.perplexity(set())
        say(f"base ({config.base[0]}-bit) perplexity {self.base_ppl:.3f}")

    def build(self, low_nodes: set[str]) -> onnx.ModelProto:
        quantized = {n: (self.low[n] if n in low_nodes else self.base[n]) for n in self.base}
        choices = {n: (self.choices_low[n] if n in low_nodes else self.choices_base[n]) for n in self.base}
        return rewrite(self.model, [self.by_node[n] for n in self.base], quantized, choices)

    def perplexity(self, low_nodes: set[str]) -> float:
        with tempfile.TemporaryDirectory(prefix="hewn-llm-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            onnx.save(self.build(low_nodes), path)
            return Decoder(file_session(str(path), threads=self.config.threads), self.layout).perplexity(self.calib)

    def choose(self, budget: float | None = None) -> WeightPlan:
        """The most layers at the low choice whose calibration perplexity stays within `budget`."""
        started = time.perf_counter()
        budget = self.config.budget if budget is None else budget
        cfg, limit = self.config, self.float_ppl * (1 + budget)
        probes = [{"low_layers": 0, "perplexity": self.base_ppl}]
        chosen: set[str] = set()
        if cfg.low and self.base_ppl <= limit:
            order = sorted((r for r in self.rows if r.get("bytes_saved", 0) > 0),
                           key=lambda r: r["low_error"] / r["bytes_saved"])
            names = _tie_aware(order, self.by_node)
            lo, hi = 0, len(names)       # invariant: the first `lo` pass; more than `hi` fail
            while lo < hi:
                mid = (lo + hi + 1) // 2
                ppl = self.perplexity(set(names[:mid]))
                probes.append({"low_layers": mid, "perplexity": ppl})
                self.say(f"{mid} of {len(names)} layers at {cfg.low[0]}-bit: perplexity {ppl:.3f} (limit {limit:.3f})")
                if ppl <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            chosen = set(names[:lo])
        rows = [dict(r) for r in self.rows]
        for r in rows:
            c = self.choices_low[r["node"]] if r["node"] in chosen else self.choices_base[r["node"]]
            r.update({"bits": c.bits, "block": c.block, "accuracy_level": c.accuracy_level,
                      "kernel_ms": {m: round(v * 1e3, 4) for m, v in c.times.items() if m != "cost"}})
        ppl = next(p["perplexity"] for p in probes if p["low_layers"] == len(chosen))
        report = {"float_perplexity": self.float_ppl, "perplexity": ppl, "budget": budget, "limit": limit,
                  "calibration_windows": len(self.calib), "calibration_tokens": int(sum(len(w) for w in self.calib)),
                  "probes": probes, "layers": rows, "left_float": self.skipped,
                  "bits": {str(b): sum(1 for r in rows if r["bits"] == b) for b in (4, 8)},
                  "seconds": round(self.seconds + time.perf_counter() - started, 1)}
        if self.base_ppl > limit:
            report["over_budget"] = (f"even {cfg.base[0]}-bit weights raise perplexity to {self.base_ppl:.3f} "
                                     f"(limit {limit:.3f}); returned at {cfg.base[0]}-bit")
        return WeightPlan(self.build(chosen), report)


def compress(float_path: str, layout: CacheLayout, calib: list[np.ndarray], config: WeightConfig = WeightConfig(),
             progress=None) -> WeightPlan:
    """The compressed model and its report (see the module doc)."""
    return Prepared(float_path, layout, calib, config, progress or (lambda msg: None)).choose()


@dataclass
class _Chosen(Choice):
    times: dict = field(default_factory=dict)


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


def _choice(costs: KernelCosts, row: dict, blocks) -> _Chosen:
    bits, block = blocks.bits, blocks.block
    if row["kind"] == "gather":  # a table lookup: no kernel to time, no accuracy level
        return _Chosen(bits, block, 0, {})
    k, n = row["shape"]
    level, times = costs.best_level(k, n, bits, block)
    return _Chosen(bits, block, level, times)


def _tie_aware(order: list[dict], by_node: dict) -> list[str]:
    """Layer order for bisection with a tied lm_head moving together with its embedding (one table)."""
    names, seen = [], set()
    for r in order:
        t = by_node[r["node"]]
        group = [t.node] + [o.node for o in by_node.values() if o.tied_to == t.node]
        if t.tied_to:
            group = [t.tied_to, t.node]
        for g in group:
            if g not in seen and g in {x["node"] for x in order}:
                names.append(g)
                seen.add(g)
    return names


def _drop(model: onnx.ModelProto, names: set[str]) -> None:
    keep = [i for i in model.graph.initializer if i.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def activation_hessians(model: onnx.ModelProto, inputs: list[str], layout: CacheLayout, calib: list[np.ndarray],
                        threads: int = 2) -> dict[str, np.ndarray]:
    """X^T X / tokens over the calibration windows for each tensor in `inputs` (its last dim is K),
    streamed window by window: the Hessian of each MatMul's output error, whose diagonal is the
    mean square of each input channel."""
    wanted = list(dict.fromkeys(inputs))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in wanted if n not in known)
    with tempfile.TemporaryDirectory(prefix="hewn-llm-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, path, save_as_external_data=not _serializable(probe), location="probe.data")
        del probe
        session = file_session(str(path), threads=threads)
        sums: dict[str, np.ndarray] = {}
        count = 0
        for w in calib:
            feeds = {"input_ids": w[None].astype(np.int64), "attention_mask": np.ones((1, len(w)), np.int64),
                     "position_ids": np.arange(len(w), dtype=np.int64)[None], **layout.empty_past()}
            for name, value in zip(wanted, session.run(wanted, feeds)):
                flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
                sums[name] = sums.get(name, 0) + flat.T @ flat
            count += len(w)
    return {n: h / count for n, h in sums.items()}


def _serializable(model: onnx.ModelProto) -> bool:
    try:
        return model.ByteSize() < 1.8e9
    except ValueError:
        return False


__all__ = ["WeightConfig", "WeightPlan", "Prepared", "compress", "activation_hessians"]
