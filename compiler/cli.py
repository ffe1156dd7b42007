"""`hewn compile | inspect`: errors are one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import HewnError


def _parse_passes(text: str | None):
    """'fold_constants,fold_batchnorm' or a JSON list (for options): ["a", ["b", {"opt": 1}]]."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [name.strip() for name in text.split(",") if name.strip()]


def _cmd_compile(args) -> int:
    from .compile import compile, report_path

    result = compile(args.model, target=args.target, passes=_parse_passes(args.passes), output=args.output)
    report = result.report
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    before, after = report["before"], report["after"]
    print(f"hewn: {args.model} -> {args.output} (target {args.target})")
    print(f"  nodes {before['nodes']} -> {after['nodes']}, params {before['params']:,} -> {after['params']:,}, "
          f"MACs {before['macs']:,} -> {after['macs']:,}")
    for rec in report["passes"]:
        if rec["modified"]:
            print(f"  {rec['pass']:<22} {rec['seconds']:.3f}s  {json.dumps(rec['stats'], default=str)[:100]}")
    v = report["verification"]
    print(f"  verified on {v['samples']} sample(s): max abs error {v['max_abs_err']:.3g} (rtol {v['rtol']})")
    print(f"  report: {report_path(args.output)}")
    return 0


def _cmd_inspect(args) -> int:
    from passes import CostModel

    from .ir import default_opset, load_model, to_graph
    from .pass_infra import Context
    from .runtime import input_specs

    model = load_model(args.model)
    graph = to_graph(model)
    cost = Context("cpu", ir_version=max(model.ir_version, 7)).analysis(CostModel, graph)
    info = {
        "model": str(args.model), "opset": default_opset(model), "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": s.name, "dtype": str(s.dtype), "shape": list(s.shape)} for s in input_specs(model)],
        "outputs": [{"name": t.name, "dtype": str(t.dtype), "shape": list(t.shape) if t.shape else None}
                    for t in graph.outputs],
        **cost.summary(),
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['model']}: opset {info['opset']}, IR {info['ir_version']}, producer '{info['producer']}'")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            print(f"  {kind[:-1]:<6} {t['name']}: {t['dtype']} {t['shape']}")
    print(f"  nodes {info['nodes']}, params {info['params']:,} ({info['param_bytes'] / 1e6:.2f} MB), "
          f"MACs {info['macs']:,}")
    print("  ops: " + ", ".join(f"{op} {n}" for op, n in info["ops"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from targets import TARGETS

    parser = argparse.ArgumentParser(prog="hewn", description="make trained networks smaller and faster for ONNX Runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="optimize an ONNX model for a target")
    comp.add_argument("model", help="input .onnx file (never modified)")
    comp.add_argument("-o", "--output", required=True, help="output .onnx path (written atomically)")
    comp.add_argument("--target", default="cpu", choices=sorted(TARGETS))
    comp.add_argument("--passes", help="comma-separated pass names replacing the target's pipeline, or a JSON list")
    comp.add_argument("--json", action="store_true", help="print the full report as JSON")
    comp.set_defaults(func=_cmd_compile)
    insp = sub.add_parser("inspect", help="ops, params, MACs, opset, inputs/outputs of an ONNX model")
    insp.add_argument("model")
    insp.add_argument("--json", action="store_true")
    insp.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HewnError as exc:
        print(f"hewn: error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"hewn: error: --passes is not valid JSON: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hewn: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
