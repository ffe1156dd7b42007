"""Compile time against graph size: a chain of N nodes (Add with a constant, Relu, Mul...) at
N = 1,250 ... 10,000; the ratio of consecutive sizes should stay near 2 (linear).

    python -m bench.scale [--sizes 1250,2500,5000,10000] [--out bench/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPS = ("Add", "Relu", "Mul", "Sigmoid")


def chain(n: int) -> onnx.ModelProto:
    nodes, inits = [], []
    prev = "x"
    for i in range(n):
        op, out = OPS[i % len(OPS)], f"t{i}"
        if op in ("Add", "Mul"):
            c = f"c{i}"
            inits.append(helper.make_tensor(c, TensorProto.FLOAT, [8], np.full(8, 0.5 + (i % 7) * 0.01, np.float32)))
            nodes.append(helper.make_node(op, [prev, c], [out], name=f"n{i}"))
        else:
            nodes.append(helper.make_node(op, [prev], [out], name=f"n{i}"))
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main() -> None:
    from hewn import compile

    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--sizes", default="1250,2500,5000,10000")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        model = chain(n)
        start = time.perf_counter()
        result = compile(model, "cpu", measure_latency=False)
        seconds = time.perf_counter() - start
        rows.append({"nodes": n, "seconds": round(seconds, 2),
                     "pass_seconds": {k: v for k, v in result.report["pass_seconds"].items() if v > 0.05}})
        print(f"{n:6d} nodes: {seconds:7.2f} s", flush=True)
    for a, b in zip(rows, rows[1:]):
        b["ratio_to_half"] = round(b["seconds"] / a["seconds"], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(rows, indent=2))
    lines = [f"hewn compile time vs chain length, {datetime.date.today()}, `python -m bench.scale`", "",
             "| nodes | seconds | vs half the nodes |", "|---|---|---|"]
    lines += [f"| {r['nodes']:,} | {r['seconds']} | {r.get('ratio_to_half', '')} |" for r in rows]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
