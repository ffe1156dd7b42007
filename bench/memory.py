"""Peak memory of compiling, per model, each in a fresh process (its own VmHWM), beside the floor a
load-everything pipeline pays: onnx.load (weights read in) plus one ORT session.

    python -m bench.memory [--skip-big] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPILE = """
import json, resource, sys, time
from hewn.core.memory import peak_rss_bytes
t = time.perf_counter()
from hewn import compile
compile(sys.argv[1], "cpu", output=sys.argv[2], measure_latency=False)
print(json.dumps({"peak_rss": peak_rss_bytes(),
                  "seconds": time.perf_counter() - t}))
"""
LOAD_AND_SESSION = """
import json, resource, sys, time
from hewn.core.memory import peak_rss_bytes
t = time.perf_counter()
import onnx, onnxruntime as ort
model = onnx.load(sys.argv[1])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(json.dumps({"peak_rss": peak_rss_bytes(),
                  "seconds": time.perf_counter() - t}))
"""


def _child(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def _minilm(folder: Path) -> Path:
    from hewn.frontends.from_torch import capture, export_onnx
    from hewn.models import REFERENCE_MODELS

    import onnx

    model, inputs = REFERENCE_MODELS["minilm"]()
    path = folder / "minilm_fp32.onnx"
    onnx.save(export_onnx(capture(model, inputs), 17), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--skip-big", action="store_true", help="leave out the 2.4 GB external-data model")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hewn-mem-") as tmp:
        tmp = Path(tmp)
        models = {"all-MiniLM-L6-v2 (fp32 ONNX)": _minilm(tmp)}
        if not args.skip_big:
            from hewn.models.big import write_big_model

            models["9 x 8192^2 MatMul, external data"] = write_big_model(tmp)
        for label, path in models.items():
            size = _size(path)
            for what, script in (("onnx.load + ORT session", LOAD_AND_SESSION), ("hewn compile cpu", COMPILE)):
                print(f"[memory] {label}: {what} ...", flush=True)
                got = _child(script, str(path), str(tmp / f"out_{len(rows)}.onnx"))
                rows.append({"model": label, "model_bytes": size, "run": what, **got,
                             "rss_over_model": round(got["peak_rss"] / size, 2) if "peak_rss" in got else None})
            for out in tmp.glob("out_*"):
                out.unlink()
    header = (f"hewn peak memory, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, each run in a fresh process "
              f"(VmHWM, includes the Python + ORT baseline); `python -m bench.memory`")
    lines = [header, "", "| model | size | run | peak RSS | RSS / model size | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        rss = f"{r['peak_rss'] / 2**20:,.0f} MiB" if "peak_rss" in r else r.get("error", "?")
        lines.append(f"| {r['model']} | {r['model_bytes'] / 2**20:,.0f} MiB | {r['run']} | {rss} | "
                     f"{r['rss_over_model'] if r['rss_over_model'] is not None else '-'} | "
                     f"{r.get('seconds', 0):.1f} |")
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.md").write_text(md)
    (out / "memory.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
