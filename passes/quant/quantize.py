"""Quantize: what compile() runs. Picks, by measurement, the scheme that is fast *and* accurate on
this machine, keeps the layers that break the accuracy budget in float, and refuses int8 that
is slower than float.

1. Each of the target's candidate schemes (e.g. uint8 x 7-bit static, int8 x int8 static, dynamic
   MatMul) is inserted on a copy and measured: output error against the float model on the
   reference inputs, and latency in ORT timed interleaved with the float model.
2. Candidates within the budget compete on latency. When none is, MixedPrecision's sensitivity
   ranking moves the most harmful layers back to float until the budget holds.
3. The winner is applied for real, unless it is not faster than float: then nothing changes.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from hewn.core.errors import ConfigError
from hewn.core.ir import to_model
from hewn.core.pass_infra import Context, Pass, PassResult
from hewn.core.progress import bar, step
from hewn.core.runtime import make_session, run_all, spread, time_interleaved, timed_verdict

from hewn.passes.quant.bias_correction import apply_shifts, correctable, output_shifts
from hewn.passes.quant.calibrate import Calibrate, calibration_source
from hewn.passes.quant.config import QuantizeConfig
from hewn.passes.quant.diagnosis import layer_errors
from hewn.passes.quant.insert_qdq import InsertQDQ, already_quantized
from hewn.passes.quant.mixed_precision import fallback_to_float, within_budget
from hewn.passes.quant.coverage import int8_coverage
from hewn.passes.quant.spec import SCHEMES
from hewn.passes.quant.adaround import adaround
from hewn.passes.quant.heads import decoding_tail
from hewn.passes.quant.smooth_quant import SmoothQuant
from hewn.passes.quant.layer_times import WEIGHTED, LayerTimes, input_shapes, layer_times_how, slower_in_int8

TIMING_RUNS = 20
ADAROUND_SAMPLES = 64    # calibration samples AdaRound learns on
ADAROUND_S = 600.0       # its time limit: layers not reached keep round-to-nearest (reported)
ELEMENTWISE = ("Add", "Mul")
COMPARE_RUNS = 60
SMOOTH_SLOWER = 1.02             # smoothing that measures this much slower is dropped when not needed
SMOOTH_ALPHAS = (0.5, 0.7, 0.85)   # SmoothQuant strengths tried for dynamic int8 (0.5 is the paper's default)


class Trial:
    """One candidate: the scheme, what was kept in float, the quantized graph and its measurements."""

    def __init__(self, scheme: str, exclude: tuple[str, ...], graph: gs.Graph, stats: dict, weighted: list[str]):
        self.scheme, self.exclude, self.graph, self.stats = scheme, exclude, graph, stats
        self.weighted = weighted  # quantized MAC nodes (what mixed precision may move back to float)
        self.error: dict = {}
        self.ratio: float = float("nan")
        self.notes: list[dict] = []
        self.times: dict = {}               # node -> measured float / int8 ms (layer_times.py)
        self.for_speed: tuple[str, ...] = ()   # layers kept float because int8 measured slower there
        self.elementwise: tuple[str, ...] = ()  # quantized activation x activation Add/Mul nodes

    def timed_as(self, other: "Trial") -> "Trial":
        """This trial with `other`'s layer times and speed-kept float layers (the same layers, other
        weights or biases: timing them again measures noise); returns self."""
        self.times, self.for_speed = other.times, other.for_speed
        return self

    def row(self, given: tuple = ()) -> dict:
        """`given`: what was float before any choice (exclude=, a detector's tail): not counted as chosen."""
        chosen = [n for n in self.exclude if n not in set(given)]
        return {"scheme": self.scheme, "float_layers": len(chosen), "ratio_to_float": None if self.ratio != self.ratio else round(self.ratio, 3),
                **({"float_given": len(given)} if given else {}),
                **{k: round(v, 5) for k, v in self.error.items() if isinstance(v, float)}}


class Quantize(Pass):
    name = "quantize"
    lossless = False
    min_opset = 13
    Config = QuantizeConfig

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = self.config
        if already_quantized(graph):
            ctx.note(self.name, "model", "the model already contains quantization ops; left as it is")
            return PassResult(False, {"already_quantized": True})
        if ctx.reference is None:
            raise ConfigError("quantize needs reference inputs to measure candidates (compile() provides them)")
        schemes = cfg.schemes or tuple(s.name for s in ctx.target.quant_schemes) or ("static_u8s8_reduced",)
        exclude = cfg.exclude
        tail = decoding_tail(graph) if cfg.float_heads else []
        if tail:
            exclude = exclude + tuple(tail)
            ctx.note(self.name, "model", f"a detector's box-decoding tail ({len(tail)} nodes from "
                                         f"{tail[0]}) stays float: boxes in pixels and scores in 0..1 share no "
                                         f"int8 scale (float_heads=False quantizes it)")
        float_model = to_model(graph.copy(), ir_version=ctx.ir_version)
        bench = _Bench(float_model, ctx, cfg.measure_speed and ctx.target.quant_timed)
        trials, why_float = [], []
        for scheme in bar(schemes, desc="int8 candidates", unit="scheme"):
            trial, notes = self._trial(graph, ctx, bench, scheme, exclude)
            if trial is None:
                why_float = notes  # why layers stayed float (for the report when none could be quantized)
            else:
                trials.append(trial)
        if not trials:
            ctx.notes.extend(why_float)
            ctx.note(self.name, "model", "no layer could be quantized by any candidate scheme")
            return PassResult(False, {"candidates": []})
        if cfg.rounding == "adaround":   # learned rounding on the all-int8 candidates of static schemes
            trials = [self._adarounded(ctx, bench, t) if not SCHEMES[t.scheme].dynamic_ops else t for t in trials]
        if bench.timed:   # layers where int8 measures slower than float stay float: free in accuracy
            trials = [self._float_where_slower(graph, ctx, bench, t) for t in trials]
        chosen, fallback = self._choose(graph, ctx, bench, trials)
        stats = {"candidates": [t.row(exclude) for t in trials], "budget": cfg.budget}
        if fallback:
            stats["mixed_precision"] = fallback
        if chosen is None and cfg.force:   # asked for int8: the most accurate candidate, its cost measured
            chosen = min(trials, key=lambda t: t.error.get("error", 1.0))
            stats["forced"] = f"no candidate met the budget {cfg.budget:g}; force=True keeps the most accurate"
        if chosen is None:
            return PassResult(False, {**stats, "kept_float": "no candidate met the budget, even with layers in float"})
        if bench.timed and not cfg.force:   # keep or refuse: timed again until the noise cannot flip it
            verdict = bench.verdict(chosen, 1.0 / cfg.min_speedup)
            stats["speed_decision"] = verdict
            chosen.ratio = verdict["ratio"]
            if verdict["verdict"] != "faster":
                words = (f"int8 not faster ({chosen.ratio:.2f}x float, 95% interval {verdict['low']:.2f}-"
                         f"{verdict['high']:.2f} over {verdict['runs']} interleaved runs)")
                if verdict["verdict"] == "inside the noise":
                    words = (f"int8 inside the timing noise of float ({chosen.ratio:.2f}x, interval "
                             f"{verdict['low']:.2f}-{verdict['high']:.2f} after {verdict['seconds']:g} s): the safe "
                             f"choice is float")
                ctx.note(self.name, "model", f"{words}; the model stays float")
                return PassResult(False, {**stats, "kept_float": words})
        layers = layer_errors(float_model, chosen.graph, ctx.reference.feeds, chosen.exclude, ctx.ir_version)
        _decisions(layers, chosen, fallback, cfg.exclude, tail)
        _replace(graph, chosen.graph)
        ctx.notes.extend(chosen.notes)
        stats.update({"chosen": chosen.row(exclude), "plan": chosen.stats, "layers": layers,
                      "int8_coverage": int8_coverage(graph, ctx)})
        if bench.times is not None:
            stats["layer_times"] = {**bench.times.summary(), "how": layer_times_how()}
        return PassResult(True, stats)

    def _trial(self, graph, ctx, bench, scheme: str, exclude: tuple, timed: bool = True, correct: bool = True):
        """(the measured Trial, or None when nothing could be quantized; the notes InsertQDQ left)."""
        trial, notes = self._insert(graph, graph.copy(), ctx, scheme, exclude)
        if trial is None:
            return None, notes
        bench.measure(trial, timed)
        if correct and self.config.bias_correction and not SCHEMES[scheme].dynamic_ops:
            trial = self._bias_corrected(graph, ctx, bench, trial)
        if correct and self.config.smooth and SCHEMES[scheme].dynamic_ops:
            trial = self._smoothed(graph, ctx, bench, trial)
        return trial, trial.notes

    def _smoothed(self, graph, ctx, bench, trial: Trial) -> Trial:
        """The trial again on SmoothQuant'ed weights (activation outliers moved into the weights, exact
        in real arithmetic), per migration strength, the best kept when it measures closer to float.
        Dynamic int8 quantizes each activation per tensor at run time: a few outlier channels of a
        transformer's LayerNorm output waste its grid (all-MiniLM-L6: cosine 0.9941 -> 0.9979 at 0.7).
        The strength found for the full trial is reused for the mixed-precision trials of the scheme."""
        alphas = bench.alpha.get(trial.scheme, SMOOTH_ALPHAS)
        best = trial
        for alpha in alphas:
            if alpha is None:
                continue
            work = graph.copy()
            done = SmoothQuant(SmoothQuant.Config(alpha=alpha, min_outlier_ratio=1.0)).run(work, _sub_context(ctx, graph, work))
            if not done.modified:
                break
            smoothed, _ = self._insert(graph, work, ctx, trial.scheme, trial.exclude)
            if smoothed is None:
                continue
            smoothed.stats["smooth_quant"] = {"alpha": alpha, "groups": done.stats.get("smoothed")}
            bench.measure(smoothed, timed=False)
            smoothed.timed_as(trial).ratio = trial.ratio
            if smoothed.error.get("error", 1.0) < best.error.get("error", 1.0):
                best = smoothed
        if best is not trial and bench.timed and within_budget(trial.error, self.config.budget):
            # both fit the budget: the Muls smoothing adds where 1/s cannot fold into a LayerNorm cost
            # time (paraphrase-MiniLM-L3: 0.74 of float smoothed, 0.67 not): measured latency decides
            slower = bench.against(trial, best)   # the two timed against each other, interleaved
            if slower > SMOOTH_SLOWER:
                trial.stats["smooth_quant"] = {"alpha": best.stats["smooth_quant"]["alpha"], "kept": False,
                                               "why": f"within the budget without it, and {slower:.3f}x its time "
                                                      f"smoothed ({COMPARE_RUNS} interleaved runs)"}
                best = trial
        if trial.scheme not in bench.alpha:
            bench.alpha[trial.scheme] = (best.stats.get("smooth_quant", {}).get("alpha"),)
        return best

    def _adarounded(self, ctx, bench, trial: Trial) -> Trial:
        """The trial with AdaRound's learned rounding (adaround.py) on calibration samples the budget
        is not judged on, kept when it measures closer to float on the held-out ones. EfficientNet-Lite0,
        200 held-out crops: top-1 agreement 93.5% (nearest + bias correction) -> 95-96.5% in 185-220 s.
        Mixed precision's trials round to nearest."""
        feeds = spread(calibration_source(ctx)[0], ADAROUND_SAMPLES)[0]
        work = trial.graph.copy().toposort()
        with step(f"AdaRound: learning the rounding of {len(trial.weighted)} layers ({trial.scheme})"):
            learned = adaround(bench.float_model, work, feeds, time_limit_s=ADAROUND_S, ir_version=bench.ir_version)
        summary = {"layers": learned["done"], "seconds": learned["seconds"], "samples": learned["samples"],
                   "not_reached": len(learned["not_reached"]), "skipped": len(learned["skipped"])}
        candidate = Trial(trial.scheme, trial.exclude, work, {**trial.stats, "adaround": summary}, trial.weighted)
        candidate.notes, candidate.elementwise = trial.notes, trial.elementwise
        bench.measure(candidate, timed=False)
        candidate.ratio = trial.ratio   # only integer weight values changed
        summary.update(error_nearest=round(trial.error.get("error", 1.0), 6),
                       error_adaround=round(candidate.error.get("error", 1.0), 6))
        if candidate.error.get("error", 1.0) < trial.error.get("error", 1.0):
            summary["kept"] = True
            return candidate
        trial.stats["adaround"] = {**summary, "kept": False, "why": "it measured no closer to float"}
        return trial

    def _float_where_slower(self, graph, ctx, bench, trial: Trial) -> Trial:
        """The trial with the layers whose int8 kernel measured slower than float (in context, with
        the conversions) left float, when there are such layers; its layer times recorded."""
        trial.times = bench.layer_times(trial)
        slow = tuple(n for n in trial.weighted if n in trial.times and slower_in_int8(trial.times[n]))
        if not slow:
            return trial
        again, _ = self._trial(graph, ctx, bench, trial.scheme, trial.exclude + slow)
        if again is None:
            return trial
        again.times, again.for_speed = trial.times, slow
        return again

    def _insert(self, graph, work, ctx, scheme: str, exclude: tuple):
        """InsertQDQ on `work`, a copy of `graph` (its biases maybe corrected) calibrated as `graph`:
        (the unmeasured Trial, or None when nothing could be quantized; the notes InsertQDQ left)."""
        sub = _sub_context(ctx, graph, work)
        result = InsertQDQ(InsertQDQ.Config(scheme=scheme, method=self.config.method, exclude=exclude)).run(work, sub)
        if not result.modified:
            return None, sub.notes
        trial = Trial(scheme, exclude, work, result.stats, [e.node for e in result.artifact.weights])
        ops = {n.name: n.op for n in graph.nodes}
        trial.elementwise = tuple(n for n in result.artifact.static if ops.get(n) in ELEMENTWISE)
        trial.notes = sub.notes
        return trial, sub.notes

    def _bias_corrected(self, graph, ctx, bench, trial: Trial) -> Trial:
        """The trial again from biases corrected for its measured mean output shift, when that
        measures closer to float (bias_correction.py); else the trial itself."""
        nodes = correctable(graph)
        if not nodes:
            return trial
        feeds, _ = calibration_source(ctx)
        shifts = output_shifts(bench.float_model, trial.graph, nodes, feeds)
        work = graph.copy()
        if not apply_shifts(work, shifts):
            return trial
        corrected, _ = self._insert(graph, work, ctx, trial.scheme, trial.exclude)
        if corrected is None:
            return trial
        corrected.stats["bias_corrected"] = len(shifts)
        bench.measure(corrected, timed=False)
        corrected.timed_as(trial).ratio = trial.ratio  # the same graph but for bias values
        return corrected if corrected.error.get("error", 1.0) < trial.error.get("error", 1.0) else trial

    def _choose(self, graph, ctx, bench, trials: list[Trial]):
        budget = self.config.budget
        speed = (lambda t: t.ratio) if bench.timed else trials.index
        good = [t for t in trials if within_budget(t.error, budget)]
        if good:
            return min(good, key=speed), None
        # Start from the fastest candidate that is not far off; else from the fastest of those about as
        # accurate as the most accurate (PP-OCRv4 det: s8s8 0.1007 at 1.26x float, u8s8 0.1014 at 1.01x).
        near = [t for t in trials if t.error["error"] <= 3 * budget]
        if not near:
            least = min(t.error["error"] for t in trials)
            near = [t for t in trials if t.error["error"] <= 1.5 * least]
        best = min(near, key=speed)
        best, grouped = self._elementwise_float(graph, ctx, bench, best)
        if grouped is not None and grouped["kept"]:
            trials.append(best)   # a candidate too: force= takes the most accurate one
        if grouped is not None and within_budget(best.error, budget):
            bench.measure(best, True)
            return best, grouped
        def trial(ex):
            found = self._trial(graph, ctx, bench, best.scheme, ex, timed=False)[0]
            return found.timed_as(best) if found is not None else None

        saved = {n: row["saved_ms"] for n, row in best.times.items()} or None
        found, report = fallback_to_float(   # sensitivity without bias correction: half the cost
            best, budget, trial, saved=saved,
            probe=lambda ex: self._trial(graph, ctx, bench, best.scheme, ex, timed=False, correct=False)[0])
        if found is not None:
            bench.measure(found, True)
        if grouped is not None:
            report["elementwise_float"] = grouped
        return found, report

    def _elementwise_float(self, graph, ctx, bench, best: Trial):
        """(the trial to fall back from, what was tried): activation x activation Add/Mul in int8
        (HardSwish's x * Clip(x + 3), squeeze-excitation gates, residual joins) move back to float
        as one unit first. On PP-OCRv4 detection they alone took the output cosine to 0.885; float,
        0.991. The grouped trial is kept when it measures closer to float."""
        if not best.elementwise:
            return best, None
        grouped, _ = self._trial(graph, ctx, bench, best.scheme, best.exclude + best.elementwise, timed=False)
        if grouped is None:
            return best, None
        grouped.timed_as(best)
        record = {"nodes": len(best.elementwise), "error_before": float(best.error["error"]),
                  "error_after": float(grouped.error["error"])}
        if grouped.error["error"] >= best.error["error"]:
            return best, {**record, "kept": False}
        return grouped, {**record, "kept": True, "float_layers": list(best.elementwise),
                         "result": f"{len(best.elementwise)} activation x activation Add/Mul kept in float"}


class _Bench:
    """Float reference outputs and latency, and the measuring of candidates against them."""

    def __init__(self, float_model, ctx, timed: bool):
        self.float_model = float_model
        self.feeds = ctx.reference.feeds
        self.reference = ctx.reference.outputs
        self.judge = ctx.reference     # output error, top-1 on class outputs, the task's own score
        self.timed = timed
        self.ir_version = ctx.ir_version
        self.float_session = make_session(float_model, threads=2) if timed else None
        self.times = LayerTimes() if timed else None
        self.alpha: dict = {}   # scheme -> the SmoothQuant strength its full trial chose (None: none)
        self._shapes: Optional[dict] = None

    def layer_times(self, trial: Trial) -> dict:
        """{node: float_ms, int8_ms, saved_ms} of the trial's quantized layers, measured (or cached)."""
        if self._shapes is None:
            names = [n.name for n in self.float_model.graph.node if n.op_type in WEIGHTED]
            self._shapes = input_shapes(self.float_model, names, self.feeds[0])
        return self.times.measure(trial.graph, trial.weighted, self._shapes)

    def verdict(self, trial: Trial, threshold: float) -> dict:
        session = make_session(to_model(trial.graph.copy(), ir_version=self.ir_version), threads=2)
        out = timed_verdict(self.float_session, session, self.feeds[0], threshold)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

    def against(self, base: Trial, other: Trial, runs: int = 0) -> float:
        """Median latency of `other` / `base`, the two timed interleaved with each other."""
        sessions = [make_session(to_model(t.graph.copy(), ir_version=self.ir_version), threads=2) for t in (base, other)]
        (a, b), _ = time_interleaved(sessions, self.feeds[0], runs or COMPARE_RUNS, warmup=3)
        return b / a

    def measure(self, trial: Trial, timed: bool = True) -> None:
        session = make_session(to_model(trial.graph.copy(), ir_version=self.ir_version), threads=2)
        trial.error = self.judge.error(run_all(session, self.feeds))
        if self.timed and timed:
            trial.ratio = _ratio(self.float_session, session, self.feeds[0])


def _ratio(base, candidate, feed, runs: int = TIMING_RUNS) -> float:
    """Median latency of `candidate` / `base`, timed interleaved after a warm-up."""
    (before, after), _ = time_interleaved((base, candidate), feed, runs, warmup=3)
    return after / before


def _sub_context(ctx, graph: gs.Graph, work: gs.Graph) -> Context:
    """A context for a trial on `work`, a copy of `graph`: same target, data and names; its own
    notes; the calibration histograms measured once on `graph` (tensor names are the same)."""
    sub = Context(ctx.target, seed=ctx.seed, reference=ctx.reference, ir_version=ctx.ir_version,
                  calibration=ctx.calibration)
    sub.names = ctx.names
    sub.provide(Calibrate, work, ctx.analysis(Calibrate, graph))
    return sub


def _decisions(layers: list[dict], chosen: Trial, fallback: Optional[dict], user_exclude: tuple,
               tail: list) -> None:
    """Per layer of the report: the measured kernel times and sensitivity the choice used, and why
    the layer ended as it did."""
    gains = {r["node"]: r["cosine_gain_if_float"] for r in (fallback or {}).get("sensitivity", [])}
    sensitive = set((fallback or {}).get("float_layers", []))
    for row in layers:
        node = row["node"]
        times = chosen.times.get(node)
        if times:
            row.update(float_ms=times["float_ms"], int8_ms=times["int8_ms"])
        if node in gains:
            row["sensitivity"] = gains[node]
        if node in chosen.for_speed:
            row["decision"] = "float: int8 measured slower here"
        elif node in sensitive:
            row["decision"] = "float: sensitive (the budget needs it)"
        elif node in tail:
            row["decision"] = "float: a detector's box-decoding tail"
        elif node in chosen.exclude:
            row["decision"] = "float: excluded" + (" by you" if node in user_exclude else "")
        elif row["precision"] == "int8":
            row["decision"] = "int8"
        else:
            row["decision"] = "float: not quantizable by this scheme"


def _replace(graph: gs.Graph, other: gs.Graph) -> None:
    graph.nodes = other.nodes
    graph.inputs = other.inputs
    graph.outputs = other.outputs


__all__ = ["Quantize", "QuantizeConfig", "within_budget", "Trial"]
