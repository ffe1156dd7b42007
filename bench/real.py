"""Real pretrained models: hewn int8 side by side with ONNX Runtime's and NNCF's quantizers, one process.

    python -m bench.real [--models efficientnet_lite0,minilm_l6,...] [--calib 64] [--eval 200] [--runs 30]
                         [--budgets 0.003,0.03] [--out bench/results]

Each model starts from one FP32 ONNX; every variant is calibrated on the same samples (photos or
text disjoint from the evaluation ones) and judged by the model's own metric (bench/real_tasks.py).
The anchors (bench/ort_anchors.py): ORT quantize_static U8S8 (reduce_range) and S8S8, ORT
quantize_dynamic, NNCF post-training quantization (ONNX backend). hewn at its defaults, and at each
int8 budget of --budgets. Latency: ORT CPU EP, 2 threads, spinning off, batch 1, timed interleaved
round-robin, as the median ratio to FP32 (below 1 is faster). Writes bench/results/real.md,
real.json and real_frontier.png (quality against speed, one panel per model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _ort_static(fp32: Path, out: Path, calib: list, **kw) -> None:
    from bench.ort_anchors import ort_quantize_static

    ort_quantize_static(fp32, out, calib, **kw)


def _nncf(task, out: Path) -> dict:
    from bench.ort_anchors import nncf_quantize

    info = nncf_quantize(task.fp32, out, task.calib, transformer=task.transformer)
    note = ", ".join(x for x in (info["model_type"], info["preset"],
                                 f"opset {info['opset']}" if "->" in info["opset"] else None) if x)
    return {"anchor": info, "note": note}


def _hewn(task, out: Path, budget=None) -> dict:
    import hewn
    from bench.decision import _decision

    kw = dict(task.hewn)
    if budget is not None:  # the int8 budget alone (accuracy_budget= would turn the planner on: prune, SVD, int8)
        kw["quantize"] = hewn.QuantizeConfig(budget=budget)
    compiled = hewn.compile(str(task.fp32), "cpu", calib_data=task.calib, output=out, **kw)
    outcome = compiled.report.get("outcome") or {}
    return {"budget": budget if budget is not None else hewn.QuantizeConfig().budget,
            "hewn_decision": _decision(compiled.report)[0][:200], "hewn_outcome": str(outcome.get("summary", ""))[:300]}


HEWN_DEFAULT = "hewn int8"


def _variants(task, folder: Path, budgets=()) -> dict:
    """{label: (path or None when it failed, seconds to make, why it failed, what the maker said)}."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import hewn

    made = {"FP32": (task.fp32, 0.0, None, {})}
    steps = {
        "ORT static U8S8+rr": lambda out: _ort_static(task.fp32, out, task.calib, reduce_range=True,
                                                       activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8),
        "ORT static S8S8": lambda out: _ort_static(task.fp32, out, task.calib, activation_type=QuantType.QInt8,
                                                   weight_type=QuantType.QInt8),
        "ORT dynamic": lambda out: quantize_dynamic(str(task.fp32), str(out), per_channel=True,
                                                    weight_type=QuantType.QInt8),
        "NNCF PTQ": lambda out: _nncf(task, out),
        HEWN_DEFAULT: lambda out: _hewn(task, out),
    }
    for budget in budgets:
        if budget != hewn.QuantizeConfig().budget:   # the default row is that budget already
            steps[f"hewn budget {budget:g}"] = lambda out, b=budget: _hewn(task, out, b)
    for label, make in steps.items():
        out = folder / f"{task.name.split()[0]}_{label.replace(' ', '_').replace('+', '')}.onnx"
        start = time.perf_counter()
        try:
            said = make(out) or {}
            made[label] = (out, time.perf_counter() - start, None, said)
        except Exception as exc:  # an anchor that fails on a real model is a result too
            made[label] = (None, time.perf_counter() - start, f"{type(exc).__name__}: {_first_line(exc)}", {})
        print(f"  {label}: {time.perf_counter() - start:.1f} s{' (failed)' if made[label][2] else ''}", flush=True)
    return made


def _session(path: Path) -> ort.InferenceSession:
    from hewn.core.runtime import make_session
    import onnx

    return make_session(onnx.load(str(path)), threads=2)


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:160]


INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
            "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm"}


def _int8_ops(path: Path) -> int:
    """Nodes that compute or convert int8: 0 is a float model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return sum(n.op_type in INT8_OPS for n in nodes)


def run_task(task, folder: Path, runs: int, budgets=()) -> dict:
    from hewn.core.runtime import time_interleaved

    made = _variants(task, folder, budgets)
    sessions, rows = {}, {}
    for label, (path, seconds, failure, said) in made.items():
        rows[label] = {"make_s": round(seconds, 1), **said}
        if failure:
            rows[label]["failed"] = failure
            continue
        try:
            sessions[label] = _session(path)
            rows[label]["int8_ops"] = _int8_ops(path)
        except Exception as exc:
            rows[label]["failed"] = f"ORT cannot load it: {_first_line(exc)}"
    outs = {label: [s.run(None, f)[task.output] for f in task.evals] for label, s in sessions.items()}
    for label in sessions:
        rows[label].update({k: round(v, 4) for k, v in task.metric(outs["FP32"], outs[label]).items()})
        rows[label]["quality_holds"] = bool(task.holds(rows[label])) if label != "FP32" else True
    medians, _ = time_interleaved(list(sessions.values()), task.evals[0], runs, warmup=5)
    base = medians[list(sessions).index("FP32")]
    for label, median in zip(sessions, medians):
        rows[label]["latency_ms"] = round(median * 1e3, 3)
        rows[label]["ratio_to_fp32"] = round(median / base, 3)
    if "ratio_to_fp32" in rows.get(HEWN_DEFAULT, {}):
        rows[HEWN_DEFAULT]["beats"] = _beaten_by(task, rows)
    rows["_task"] = {"primary": _primary(task, rows), "lower_is_better": task.lower_is_better,
                     "bar": round(task.bar(rows["FP32"]), 4) if task.bar and "FP32" in sessions else None}
    return rows


def _primary(task, rows: dict) -> str:
    if task.primary:
        return task.primary
    fp32 = rows.get("FP32", {})
    return next((k for k in fp32 if k not in NOT_QUALITY), "")


def _is_anchor(label: str) -> bool:
    return label.startswith(("ORT", "NNCF"))


def _beaten_by(task, rows: dict) -> list[str]:
    """The anchors hewn's default row loses to: faster than it and either holding the task's bar,
    or of better quality than hewn's (acceptance: hewn at least as fast as every anchor that holds,
    and of equal or better quality than each anchor that is faster)."""
    hewn_row, key, sign = rows[HEWN_DEFAULT], _primary(task, rows), -1 if task.lower_is_better else 1
    out = []
    for label, row in rows.items():
        if not _is_anchor(label) or "ratio_to_fp32" not in row or row["ratio_to_fp32"] >= hewn_row["ratio_to_fp32"]:
            continue
        better = key in row and sign * (row[key] - hewn_row[key]) > 0
        if row["quality_holds"] or better:
            why = "holds" if row["quality_holds"] else f"{key} {row[key]}"
            out.append(f"{label} ({row['ratio_to_fp32']:.2f}, {why})")
    return out


NOT_QUALITY = {"make_s", "latency_ms", "ratio_to_fp32", "quality_holds", "failed", "anchor", "note", "budget",
               "hewn_outcome", "hewn_decision", "int8_ops", "beats"}


def _table(results: dict) -> str:
    lines = ["| model | variant | ratio to FP32 (batch 1) | quality | holds | int8 ops | make s | beats |",
             "|---|---|---|---|---|---|---|---|"]
    for model, rows in results.items():
        for label, row in rows.items():
            if label.startswith("_"):
                continue
            variant = f"{label} ({row['note']})" if row.get("note") else label
            if "failed" in row:
                lines.append(f"| {model} | {variant} | fails: {row['failed']} | | | | {row['make_s']} | |")
                continue
            quality = ", ".join(f"{k} {v}" for k, v in row.items() if k not in NOT_QUALITY)
            beats = ("none" if not row["beats"] else "; ".join(row["beats"])) if "beats" in row else ""
            lines.append(f"| {model} | {variant} | {row['ratio_to_fp32']:.2f} ({row['latency_ms']} ms) | {quality} | "
                         f"{'yes' if row['quality_holds'] else 'NO'} | {row.get('int8_ops', '')} | {row['make_s']} | "
                         f"{beats} |")
    return "\n".join(lines)


def _budgets(text: str) -> list[float]:
    try:
        return [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"--budgets takes comma-separated numbers (e.g. 0.003,0.03), got {text!r}") from None


def main() -> None:
    from bench.real_tasks import TASKS

    parser = argparse.ArgumentParser(prog="python -m bench.real", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TASKS))
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--budgets", default="0.003,0.03",
                        help="hewn's int8 budgets beside its default (QuantizeConfig(budget=)); empty: the default only")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    budgets = _budgets(args.budgets)
    results = {}
    with tempfile.TemporaryDirectory(prefix="hewn-real-") as tmp:
        for name in args.models.split(","):
            start = time.perf_counter()
            print(f"{name}:", flush=True)
            try:
                task = TASKS[name](Path(tmp), args.calib, args.eval)
                results[task.name] = run_task(task, Path(tmp), args.runs, budgets)
            except Exception as exc:  # one model's failure must not lose the others' results
                results[name] = {"(bench)": {"make_s": 0.0, "failed": f"{type(exc).__name__}: {exc}"[:200]}}
            label = list(results)[-1]
            print(f"{label}: {time.perf_counter() - start:.0f} s\n{_table({label: results[label]})}", flush=True)
            _write(results, args)


def _write(results: dict, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# Real models: hewn int8 vs ONNX Runtime's and NNCF's quantizers\n\n{time.strftime('%Y-%m-%d')}, "
              f"{platform.processor() or platform.machine()}, ORT {ort.__version__}, NNCF {_version('nncf')}, "
              f"calib {args.calib}, eval {args.eval}, {args.runs} interleaved runs, hewn budgets "
              f"{args.budgets or 'default only'}. `python -m bench.real`.\n\n"
              f"holds: the task's bar. int8 ops: quantize/dequantize and integer nodes (0: a float model). "
              f"beats (hewn's default row): the anchors faster than hewn that hold the bar or have better quality "
              f"than hewn's; none means hewn is at least as fast as every anchor that holds and as good as every "
              f"faster one. The frontier: real_frontier.png.\n\n")
    (out / "real.md").write_text(header + _table(results) + "\n")
    (out / "real.json").write_text(json.dumps(results, indent=2))
    try:
        plot_frontier(results, out / "real_frontier.png")
    except Exception as exc:  # the table is the result; a plot that fails says why and loses nothing
        print(f"frontier plot failed: {type(exc).__name__}: {_first_line(exc)}", flush=True)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


TICKS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.2, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50)


def plot_frontier(results: dict, path: Path) -> None:
    """One subplot per model: x the latency ratio to FP32, y the model's quality metric, a marker per
    variant (filled where the quality holds), hewn's default and budget points joined by a line,
    the task's bar dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    models = [(m, rows) for m, rows in results.items() if rows.get("_task", {}).get("primary")]
    if not models:
        return
    cols = min(3, len(models))
    nrows = -(-len(models) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    styles = {"FP32": ("*", "black"), "ORT": ("s", "tab:blue"), "NNCF": ("^", "tab:green"), "hewn": ("o", "tab:red")}
    for ax, (model, rows) in zip(axes.flat, models):
        key, bar = rows["_task"]["primary"], rows["_task"]["bar"]
        hewn_line = []
        shown = [(label, row) for label, row in rows.items()
                 if not label.startswith("_") and "ratio_to_fp32" in row and key in row]
        for i, (label, row) in enumerate(shown):
            marker, color = styles.get(label.split()[0], ("D", "tab:gray"))
            x, y = row["ratio_to_fp32"], row[key]
            ax.scatter([x], [y], marker=marker, s=70 if marker == "*" else 45, edgecolors=color,
                       facecolors=color if row["quality_holds"] else "none", zorder=3)
            name = label.replace("ORT static ", "ORT ").replace("hewn budget ", "hewn b=")
            if label == HEWN_DEFAULT:
                name = f"hewn default (b={row.get('budget', '?')})"
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4 - 9 * (i % 3)), fontsize=7,
                        color=color)
            if label.startswith("hewn") and "budget" in row:
                hewn_line.append((row["budget"], x, y))
        if len(hewn_line) > 1:
            hewn_line.sort()
            ax.plot([p[1] for p in hewn_line], [p[2] for p in hewn_line], color="tab:red", lw=1, zorder=2)
        if bar is not None:
            ax.axhline(bar, color="gray", ls="--", lw=0.8)
        ax.axvline(1.0, color="gray", ls=":", lw=0.8)
        ax.set_xscale("log")   # ratios: 0.5 and 2 lie as far from FP32
        low, high = ax.get_xlim()
        ticks = [t for t in TICKS if low <= t <= high]
        ax.set_xticks(ticks[::-(-len(ticks) // 7)] if len(ticks) > 7 else ticks)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("latency ratio to FP32 (batch 1; left is faster)")
        ax.set_ylabel(f"{key} ({'lower' if rows['_task']['lower_is_better'] else 'higher'} is better)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("Speed-quality frontier: filled = quality holds the task's bar (dashed); hewn's budgets joined",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
