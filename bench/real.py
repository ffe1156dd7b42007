"""Real pretrained models: hewn int8 side by side with ONNX Runtime's quantizers, one process.

    python -m bench.real [--models efficientnet_lite0,ppocr_rec,...] [--calib 64] [--eval 200] [--runs 30]

Each model starts from one FP32 ONNX; every variant is calibrated on the same samples (photos or
text disjoint from the evaluation ones) and judged by the model's own metric (bench/real_tasks.py).
Latency: ORT CPU EP, 2 threads, spinning off, batch 1, timed interleaved round-robin, as the
median ratio to FP32 (below 1 is faster). Writes bench/results/real.md and real.json.
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


def _variants(task, folder: Path) -> dict:
    """{label: (path or None when it failed, seconds to make, why it failed)}."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import hewn

    made = {"FP32": (task.fp32, 0.0, None)}
    steps = {
        "ORT static U8S8+rr": lambda out: _ort_static(task.fp32, out, task.calib, reduce_range=True,
                                                       activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8),
        "ORT static S8S8": lambda out: _ort_static(task.fp32, out, task.calib, activation_type=QuantType.QInt8,
                                                   weight_type=QuantType.QInt8),
        "ORT dynamic": lambda out: quantize_dynamic(str(task.fp32), str(out), per_channel=True,
                                                    weight_type=QuantType.QInt8),
        "hewn int8": lambda out: hewn.compile(str(task.fp32), "cpu", calib_data=task.calib, output=out),
    }
    for label, make in steps.items():
        out = folder / f"{task.name.split()[0]}_{label.replace(' ', '_').replace('+', '')}.onnx"
        start = time.perf_counter()
        try:
            make(out)
            made[label] = (out, time.perf_counter() - start, None)
        except Exception as exc:  # an anchor that fails on a real model is a result too
            made[label] = (None, time.perf_counter() - start, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return made


def _session(path: Path) -> ort.InferenceSession:
    from hewn.core.runtime import make_session
    import onnx

    return make_session(onnx.load(str(path)), threads=2)


def run_task(task, folder: Path, runs: int) -> dict:
    from hewn.core.runtime import time_interleaved

    made = _variants(task, folder)
    sessions, rows = {}, {}
    for label, (path, seconds, failure) in made.items():
        rows[label] = {"make_s": round(seconds, 1)}
        if failure:
            rows[label]["failed"] = failure
            continue
        try:
            sessions[label] = _session(path)
        except Exception as exc:
            rows[label]["failed"] = f"ORT cannot load it: {str(exc).splitlines()[0][:160]}"
    outs = {label: [s.run(None, f)[task.output] for f in task.evals] for label, s in sessions.items()}
    for label in sessions:
        rows[label].update({k: round(v, 4) for k, v in task.metric(outs["FP32"], outs[label]).items()})
        rows[label]["quality_holds"] = bool(task.holds(rows[label])) if label != "FP32" else True
    medians, _ = time_interleaved(list(sessions.values()), task.evals[0], runs, warmup=5)
    base = medians[list(sessions).index("FP32")]
    for label, median in zip(sessions, medians):
        rows[label]["latency_ms"] = round(median * 1e3, 3)
        rows[label]["ratio_to_fp32"] = round(median / base, 3)
    return rows


def _table(results: dict) -> str:
    lines = ["| model | variant | ratio to FP32 (batch 1) | quality | holds | make s |", "|---|---|---|---|---|---|"]
    for model, rows in results.items():
        for label, row in rows.items():
            if "failed" in row:
                lines.append(f"| {model} | {label} | fails: {row['failed']} | | | {row['make_s']} |")
                continue
            quality = ", ".join(f"{k} {v}" for k, v in row.items()
                                if k not in ("make_s", "latency_ms", "ratio_to_fp32", "quality_holds"))
            lines.append(f"| {model} | {label} | {row['ratio_to_fp32']:.2f} ({row['latency_ms']} ms) | {quality} | "
                         f"{'yes' if row['quality_holds'] else 'NO'} | {row['make_s']} |")
    return "\n".join(lines)


def main() -> None:
    from bench.real_tasks import TASKS

    parser = argparse.ArgumentParser(prog="python -m bench.real", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TASKS))
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="hewn-real-") as tmp:
        for name in args.models.split(","):
            start = time.perf_counter()
            try:
                task = TASKS[name](Path(tmp), args.calib, args.eval)
                results[task.name] = run_task(task, Path(tmp), args.runs)
            except Exception as exc:  # one model's failure must not lose the others' results
                results[name] = {"(bench)": {"make_s": 0.0, "failed": f"{type(exc).__name__}: {exc}"[:200]}}
            label = list(results)[-1]
            print(f"{label}: {time.perf_counter() - start:.0f} s\n{_table({label: results[label]})}", flush=True)
            _write(results, args)


def _write(results: dict, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# Real models: hewn int8 vs ONNX Runtime's quantizers\n\n{time.strftime('%Y-%m-%d')}, "
              f"{platform.processor() or platform.machine()}, ORT {ort.__version__}, calib {args.calib}, "
              f"eval {args.eval}, {args.runs} interleaved runs. `python -m bench.real`.\n\n")
    (out / "real.md").write_text(header + _table(results) + "\n")
    (out / "real.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
