"""Does hewn's keep/refuse decision for int8 survive a busy machine? The same compile, run N
times while other processes keep every core busy; prints each run's decision and its timing.

    python -m bench.decision [--model ppocr_rec] [--runs 5] [--load 2] [--calib 32]

The decision is the Quantize pass's: int8 kept, or kept float with the reason; its speed verdict
(the interleaved ratio to float with its ~95% interval and the runs it took) is printed beside it.
Writes bench/results/decision.md.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _spin(stop) -> None:   # one busy core: what another job on a shared machine does
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2147483648


def _decision(report: dict) -> tuple[str, dict]:
    q = report.get("quantization", {})
    if "chosen" in q:
        return f"int8 kept ({q['chosen']['scheme']})", q.get("speed_decision", {})
    return f"float ({q.get('kept_float', 'not quantized')})", q.get("speed_decision", {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ppocr_rec", help="a bench.real task name")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", type=int, default=2, help="busy processes beside the compile")
    parser.add_argument("--calib", type=int, default=32)
    args = parser.parse_args(argv)

    import hewn
    from bench.real_tasks import TASKS

    folder = Path(tempfile.mkdtemp(prefix="hewn-decision-"))
    task = TASKS[args.model](folder, args.calib, 4)
    stop = multiprocessing.Event()
    load = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)]
    for p in load:
        p.start()
    rows = []
    try:
        for i in range(args.runs):
            started = time.perf_counter()
            result = hewn.compile(str(task.fp32), "cpu", calib_data=task.calib, output=str(folder / f"out{i}.onnx"))
            decision, speed = _decision(result.report)
            rows.append((i + 1, decision, speed, time.perf_counter() - started,
                         result.report.get("latency", {}).get("speed", "")))
            print(f"run {i + 1}: {decision}; verdict {speed.get('verdict')} ratio {speed.get('ratio')} "
                  f"[{speed.get('low')}, {speed.get('high')}] over {speed.get('runs')} runs; "
                  f"end to end {rows[-1][4]}; {rows[-1][3]:.0f} s", flush=True)
    finally:
        stop.set()
        for p in load:
            p.join(5)
    same = len({r[1].split(" (")[0] for r in rows}) == 1
    lines = [f"# int8 keep/refuse decision under load: {task.name}", "",
             f"{args.runs} compiles, {args.load} busy processes beside each, {args.calib} calibration samples, "
             f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores. Same decision every run: {'yes' if same else 'NO'}.",
             "", "| run | decision | int8/float ratio (95% interval) | timed runs | end to end | compile s |",
             "|---|---|---|---|---|---|"]
    for i, decision, speed, seconds, end in rows:
        interval = f"{speed.get('ratio')} ({speed.get('low')}-{speed.get('high')})" if speed else ""
        lines.append(f"| {i} | {decision} | {interval} | {speed.get('runs', '')} | {end} | {seconds:.0f} |")
    out = Path(__file__).parent / "results" / "decision.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
