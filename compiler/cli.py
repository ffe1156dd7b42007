"""`hewn compile | inspect | explain`: errors are one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from hewn.core.errors import ConfigError, HewnError, InputMismatchError, printable


def _parse_passes(text: str | None):
    """'fold_constants,fold_batchnorm' or a JSON list (for options): ["a", ["b", {"opt": 1}]]."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--passes is not valid JSON: {exc}") from None
    return [name.strip() for name in text.split(",") if name.strip()]


def _read_report(model: str) -> dict:
    """The report.json hewn wrote beside `model`."""
    from pathlib import Path

    from hewn.core.errors import InvalidModelError
    from hewn.driver.result import report_path

    path = report_path(model)
    if not Path(path).is_file():
        raise InvalidModelError(f"{path}: no hewn report beside {model}; compile it with hewn first")
    try:
        report = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModelError(f"{path}: not a hewn report (not valid JSON: {exc}); compile {model} again") from None
    if not isinstance(report, dict) or "passes" not in report:
        raise InvalidModelError(f"{path}: not a hewn report (no 'passes' section); compile {model} again")
    return report


def _is_kv_cache_lm(model: str) -> bool:
    from hewn.frontends.kv_cache_onnx import is_kv_cache_onnx

    return is_kv_cache_onnx(model)


def _cmd_compile(args) -> int:
    import warnings

    from hewn.core.errors import HewnWarning

    from hewn.driver.compile import compile
    from hewn.driver.result import html_path, report_path

    model, example, calib, tokenizer, metric = _inputs(args)
    quantize = _quantize_choice(args)
    sparsity = None if args.sparsity is None else (args.sparsity if args.sparsity == "2:4" else _share(args.sparsity))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=HewnWarning)   # the CLI prints them itself, as WARNING lines
        result = compile(model, target=args.target, passes=_parse_passes(args.passes), output=args.output,
                         calib_data=calib, quantize=quantize, accuracy_budget=args.budget, prune=args.prune,
                         sparsity=sparsity, on_error=args.on_error, tokenizer=tokenizer, metric=metric,
                         strict=args.strict, example_inputs=example)
    report = result.report
    quality = report.get("quality", {})
    missed = quality.get("warning") or report["verification"].get("budget_met") is False or \
        report.get("plan", {}).get("final", {}).get("budget_met") is False or (report.get("weights") or {}).get("over_budget")
    status = 3 if missed else 0   # written, but it cost more than it was allowed: scripts must see it
    if args.json:
        from hewn.core.storage import json_text

        print(json_text(report))
        return status
    before, after = report["before"], report["after"]
    print(f"hewn: {args.model} -> {args.output} (target {args.target})")
    print(f"  nodes {before['nodes']} -> {after['nodes']}, params {before['params']:,} -> {after['params']:,}, "
          f"MACs {before['macs']:,} -> {after['macs']:,}")
    for rec in report["passes"]:
        if rec["modified"]:
            print(f"  {rec['pass']:<22} {rec['seconds']:.3f}s  {_stats_words(rec['stats'])}")
    v = report["verification"]
    if "rtol" in v:
        print(f"  verified on {v['samples']} sample(s): max abs error {v['max_abs_err']:.3g} (rtol {v['rtol']})")
    else:
        print(f"  lossy ({', '.join(v['lossy_passes'])}), measured on {v['samples']} sample(s): "
              f"output cosine {v['mean_cosine']:.5f}, max abs error {v['max_abs_err']:.3g}")
    if "quantization" in report:
        _print_quantization(report["quantization"])
    if "weights" in report:
        w = report["weights"]
        print(f"  weights: {len(w['layers'])}; {w['moves_taken']} of {w['moves']} steps down the measured ladders; "
              f"{len(w['left_float'])} left float; calibration perplexity {w['float_perplexity']:.3f} -> "
              f"{w['perplexity']:.3f}")
        if w.get("over_budget"):
            print(f"  WARNING: perplexity budget missed: {w['over_budget']}")
    if "latency" in report:
        lat = report["latency"]
        spread = f"; spread {lat['spread']:.0%} over {lat['runs']} runs" if "spread" in lat else ""
        print(f"  latency on this machine: {lat['before_ms']:.3f} ms -> {lat['after_ms']:.3f} ms "
              f"({lat['speed']}{spread})")
        if lat.get("warning"):
            print(f"  WARNING: {lat['warning']}")
    result_line = report["outcome"]
    print(f"  result: {result_line['summary']}")
    for tip in result_line.get("advice", []):
        print(f"    to gain more: {tip}")
    for skip in report.get("skipped_passes", []):
        print(f"  SKIPPED pass {skip['pass']} (failed, changes undone): {printable(skip['error'][:200])}")
    for note in report.get("left_intact", [])[:5]:
        print(f"  left intact by {note['pass']}: {printable(note['where'])}: {printable(note['why'])}")
    if len(report.get("left_intact", [])) > 5:
        print(f"  ... {len(report['left_intact']) - 5} more in the report")
    for text in (quality.get("warning"), report["verification"].get("statement"),
                 report.get("plan", {}).get("final", {}).get("statement")):
        if text:
            print(f"  WARNING: {printable(text)}")
    print(f"  report: {report_path(args.output)} and {html_path(args.output)}")
    return status


def _stats_words(stats: dict, most: int = 6) -> str:
    """A pass's stats as words: its numbers and names, lists by their length, at most `most` items."""
    words = []
    for key, value in stats.items():
        label = key.replace("_", " ")
        if isinstance(value, bool):
            words.append(label if value else f"no {label}")
        elif isinstance(value, (int, float)):
            words.append(f"{label} {value:.4g}" if isinstance(value, float) else f"{label} {value:,}")
        elif isinstance(value, str):
            words.append(f"{label} {value}" if len(value) <= 40 else f"{label} {value[:37]}...")
        elif isinstance(value, (list, tuple, dict)):
            words.append(f"{label}: {len(value)}")
    more = f" (+{len(words) - most} more in the report)" if len(words) > most else ""
    return printable(", ".join(words[:most]) + more)


def _share(text: str) -> float:
    from hewn.core.errors import ConfigError

    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--sparsity {text!r}: give a share like 0.8, or 2:4") from None


def _cmd_report(args) -> int:
    from pathlib import Path

    from hewn.driver.result import report_path, write_html

    from hewn.core.errors import InvalidModelError

    report = _read_report(args.model)
    try:
        page = write_html(report, args.model)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:   # an edited report.json
        raise InvalidModelError(f"{report_path(args.model)}: not a report hewn wrote (a field is missing or has the "
                                f"wrong type: {type(exc).__name__}: {exc}); compile {args.model} again") from None
    print(page)
    if args.open:
        import webbrowser

        webbrowser.open(Path(page).resolve().as_uri())
    return 0


def _cmd_bench(args) -> int:
    """Time the model against its compiled version in ORT on this machine (batch of one input)."""
    from hewn.driver.compile import compile
    from hewn.core.ir import load_model
    from hewn.core.runtime import input_specs, integer_bounds, make_session, run, seeded_inputs, time_interleaved
    from hewn.core.measure import output_error
    from hewn.core.speed import speed_words

    if args.runs < 1 or args.threads < 0:
        raise ConfigError(f"--runs must be at least 1 and --threads at least 0, got {args.runs} and {args.threads}")
    original = load_model(args.model)
    compiled = load_model(args.compiled) if args.compiled else compile(args.model, target="cpu").onnx
    feeds = seeded_inputs(input_specs(original), 4, seed=0, bounds=integer_bounds(original))
    sessions = {"original": make_session(original, threads=args.threads),
                "compiled": make_session(compiled, threads=args.threads)}
    outs = {k: [run(s, None, f) for f in feeds] for k, s in sessions.items()}  # also the warm-up (time-limited)
    medians, _ = time_interleaved(list(sessions.values()), feeds[0], args.runs, warmup=0)
    med = {k: m * 1e3 for k, m in zip(sessions, medians)}
    err = output_error(outs["original"], outs["compiled"])
    result = {"original_ms": round(med["original"], 4), "compiled_ms": round(med["compiled"], 4),
              "ratio_to_original": round(med["compiled"] / med["original"], 3),
              "output_cosine": round(err.get("mean_cosine", 0.0), 6), "runs": args.runs, "threads": args.threads,
              "inputs": "seeded random, batch as in the model's input shapes (symbolic dims = 1)"}
    result["speed"] = speed_words(med["original"], med["compiled"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model}: original {result['original_ms']:.3f} ms, compiled {result['compiled_ms']:.3f} ms "
              f"({result['speed']}), output cosine {result['output_cosine']:.6f} "
              f"[ORT CPU EP, {args.threads} threads, spinning off, median of {args.runs} interleaved runs]")
    return 0


def _inputs(args) -> tuple:
    """(model, example_inputs, calib_data, tokenizer, metric) for compile(): MODEL with --calib, or
    the module and calibration hf_folder builds from a Hugging Face folder (--task)."""
    if Path(args.model).suffix.lower() in (".pt", ".pth", ".ckpt", ".pkl"):   # unpickling a file runs its code
        raise InputMismatchError(f"{args.model} is a pickled torch file, which hewn does not load (unpickling runs "
                                 f"code from the file): call hewn.compile(module, example_inputs=...) in Python, or "
                                 f"save_pretrained() a Hugging Face model to a folder and pass it with --task")
    if args.task is not None or Path(args.model).is_dir():
        folder = _hf_folder(args)
        return folder.module, folder.example_inputs, folder.calib_data, folder.tokenizer, args.metric or folder.metric
    return args.model, None, _calibration(args), args.tokenizer, args.metric


def _calibration(args):
    """--calib for a model file: text or token ids for a causal LM, else model inputs (calib_files)."""
    from hewn.frontends.calib_files import calib_source

    if args.calib and Path(args.calib).suffix == ".txt":  # text: a causal LM's calibration corpus
        return _load_text(args)
    if args.tokenizer:
        raise InputMismatchError("--tokenizer is for text calibration of a causal LM: give --calib corpus.txt")
    if args.calib and _is_kv_cache_lm(args.model):   # a KV-cache LM: --calib holds token ids
        from hewn.frontends.calib_files import token_ids

        return token_ids(args.calib)
    return calib_source(args.calib) if args.calib else None


def _hf_folder(args):
    """MODEL as a local Hugging Face folder with --task: hewn.frontends.hf_folder.FolderModel."""
    from hewn.frontends.hf_folder import TASKS, load

    if args.task is None:
        raise InputMismatchError(f"{args.model} is a folder: add --task ({', '.join(TASKS)}) to compile the Hugging "
                                 f"Face model in it")
    if Path(args.model).suffix == ".onnx":
        raise ConfigError(f"--task is for a Hugging Face model folder; {args.model} is an ONNX model: drop --task")
    return load(args.model, args.task, args.calib, args.tokenizer)


def _load_text(args) -> list[str]:
    """--calib corpus.txt: a causal LM's calibration text (tokenized with --tokenizer)."""
    from hewn.frontends.kv_cache_onnx import is_kv_cache_onnx

    if not is_kv_cache_onnx(args.model):
        raise InputMismatchError(f"--calib {args.calib}: text calibrates a causal LM with a KV cache (inputs input_ids "
                                 f"and past_key_values.*); {args.model} has none. Give a .npz of model inputs instead")
    if not args.tokenizer:
        raise InputMismatchError(f"--calib {args.calib} is text: give --tokenizer DIR (a Hugging Face tokenizer folder)")
    try:
        return [Path(args.calib).read_text(encoding="utf-8")]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputMismatchError(f"--calib {args.calib}: cannot read it as UTF-8 text ({exc})") from None


def _quantize_choice(args):
    """--quant: None (auto), False (off), or a forced QuantizeConfig over the target's schemes of that kind."""
    if args.quant in ("auto", "off"):
        return None if args.quant == "auto" else False
    from hewn.passes.quant.config import QuantizeConfig
    from hewn.passes.quant.spec import SCHEMES
    from hewn.targets import get_target

    schemes = tuple(s.name for s in get_target(args.target).quant_schemes
                    if args.quant == "on" or bool(SCHEMES[s.name].dynamic_ops) == (args.quant == "dynamic"))
    if not schemes:
        raise InputMismatchError(f"--quant {args.quant}: target {args.target} has no {args.quant} int8 kernels; "
                                 f"its schemes: {', '.join(s.name for s in get_target(args.target).quant_schemes)}")
    return QuantizeConfig(schemes=schemes, force=True)   # --budget, when given, replaces its budget


def _print_quantization(q: dict) -> None:
    from hewn.core.speed import compared_to

    if "chosen" not in q:
        print(f"  quantization: kept float ({q.get('kept_float', 'nothing to quantize')})")
        return
    c, cov = q["chosen"], q["int8_coverage"]
    ratio = c.get("ratio_to_float")
    speed = "latency not timed for this target" if ratio is None else compared_to(1.0, ratio, "float")
    print(f"  quantization: {c['scheme']}, {speed}, int8 coverage "
          f"{cov['coverage']:.0%} of MACs, {c['float_layers']} layer(s) kept float")
    _print_costliest(q.get("layers", []))


def _print_costliest(layers: list[dict], count: int = 5) -> None:
    from hewn.passes.quant.diagnosis import costliest

    for row in costliest(layers, count):
        where = f" ({printable(row['module'])})" if row.get("module") else ""
        sqnr = "  no noise" if row["sqnr_db"] is None else f"{row['sqnr_db']:7.2f} dB"
        print(f"    {sqnr}  {row['op']:<8} {printable(row['node'])}{where}  [{row['precision']}]")


def _cmd_explain(args) -> int:

    report = _read_report(args.model)
    if report.get("weights", {}).get("layers"):
        return _explain_weights(args, report["weights"])
    q = report.get("quantization")
    if not q or "layers" not in q:
        print(f"{args.model}: not quantized by hewn ({(q or {}).get('kept_float', 'no quantization section')})")
        return 0
    print(f"{args.model}: {q['chosen']['scheme']}, output cosine {q['chosen'].get('mean_cosine')}; "
          f"layers that cost the most accuracy (lowest SQNR of their output vs float):")
    _print_costliest(q["layers"], args.top)
    for row in q["layers"]:
        if row["precision"] == "float":
            where = f" ({printable(row['module'])})" if row.get("module") else ""
            why = f": {row['decision'][len('float: '):]}" if row.get("decision", "").startswith("float: ") else ""
            print(f"    kept in float: {row['op']:<8} {printable(row['node'])}{where}{why}{_times(row)}")
    return 0


def _times(row: dict) -> str:
    """The measured kernel times a layer's decision used (layer_times.py), when int8 was timed."""
    if "int8_ms" not in row:
        return ""
    return f"  [float {row['float_ms']:.3f} ms, int8 {row['int8_ms']:.3f} ms]"


def _explain_weights(args, w: dict) -> int:
    """A causal LM's weights: the layers whose options cost the most output error."""
    from hewn.driver.outcome import percent

    print(f"{args.model}: weight-only, calibration perplexity {w['float_perplexity']:.3f} -> {w['perplexity']:.3f} "
          f"(budget +{percent(w['budget'])}); weights with the largest output error at their chosen bits:")
    for row in sorted(w["layers"], key=lambda r: -r["error"])[:args.top]:
        print(f"    {row['error']:.3g}  {row['kind']:<7} {printable(row['node'])}  [{row['bits']}-bit, block {row['block']}, "
              f"{row['method']}]")
    for row in w.get("left_float", []):
        print(f"    kept in float: {printable(row['node'])}: {printable(row['reason'])}")
    return 0


def _cmd_inspect(args) -> int:
    from hewn.core.ir import default_opset, load_model, to_graph
    from hewn.driver.run import cost_summary
    from hewn.core.pass_infra import Context
    from hewn.core.runtime import input_specs
    from hewn.targets import CPU

    model = load_model(args.model)
    graph = to_graph(model)
    cost = cost_summary(graph, Context(CPU, ir_version=max(model.ir_version, 7)))
    info = {
        "model": str(args.model), "opset": default_opset(model), "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": s.name, "dtype": str(s.dtype), "shape": list(s.shape)} for s in input_specs(model)],
        "outputs": [{"name": t.name, "dtype": str(t.dtype), "shape": list(t.shape) if t.shape else None}
                    for t in graph.outputs],
        **cost,
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{printable(info['model'])}: opset {info['opset']}, IR {info['ir_version']}, "
          f"producer '{printable(info['producer'])}'")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            print(f"  {kind[:-1]:<6} {printable(t['name'])}: {t['dtype']} {printable(t['shape'])}")
    print(f"  nodes {info['nodes']}, params {info['params']:,} ({info['param_bytes'] / 1e6:.2f} MB), "
          f"MACs {info['macs']:,}")
    print("  ops: " + printable(", ".join(f"{op} {n}" for op, n in info["ops"].items())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hewn.targets import TARGETS

    from hewn import __version__

    parser = argparse.ArgumentParser(prog="hewn", description="make trained networks smaller and faster for ONNX Runtime")
    parser.add_argument("--version", action="version", version=f"hewn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="optimize an ONNX model for a target")
    comp.add_argument("model", help="input .onnx file, or a Hugging Face model folder with --task (never modified)")
    comp.add_argument("-o", "--output", required=True, help="output .onnx path (written atomically)")
    comp.add_argument("--target", default="cpu", choices=sorted(TARGETS),
                      help="where the model will run: chooses formats, kernels and int8 schemes (default cpu)")
    comp.add_argument("--passes", help="comma-separated pass names replacing the target's pipeline, or a JSON list")
    comp.add_argument("--calib", help="calibration inputs: a .npz (arrays named by input, first axis = samples) "
                                      "or a folder of .npy/.npz samples; turns on quantization. A .txt file "
                                      "calibrates a causal LM with a KV cache (with --tokenizer)")
    comp.add_argument("--tokenizer", help="Hugging Face tokenizer folder for --calib text (causal LMs; with --task, "
                                          "one other than the model folder's own)")
    comp.add_argument("--task", help="MODEL is a local Hugging Face folder (config.json and weights, loaded offline) "
                                     "compiled for this task: feature-extraction (sentence embeddings: mean of "
                                     "last_hidden_state over attention_mask; --calib a .txt, one sentence per line), "
                                     "text-classification (logits; --calib .txt), image-classification (logits of "
                                     "pixel_values; --calib a folder of images), causal-lm (KV-cache decoder, "
                                     "weights 4/8-bit under a perplexity budget; --calib corpus.txt)")
    comp.add_argument("--quant", choices=("auto", "int8", "dynamic", "on", "off"), default="auto",
                      help="auto: int8 when --calib is given, kept where it is faster within the budget; int8 / "
                           "dynamic: static / dynamic int8 of the target, kept even when not faster or over the "
                           "budget (its cost is measured, and a large loss is warned about); on: either kind, kept; "
                           "off: float")
    comp.add_argument("--budget", type=float, help="allowed output error (1 - cosine); alone it turns on the planner "
                                                   "(prune ratio + SVD rank per layer, then int8), default 0.01. "
                                                   "For a causal LM: allowed relative perplexity increase, default 0.05")
    comp.add_argument("--metric", choices=("cosine", "top1", "boxes"),
                      help="what quality is judged and stated in: top1 (class scores), cosine (embeddings, "
                           "features) or boxes (YOLO-style detections: box F1 against the original's); default: "
                           "output error (1 - cosine), and top-1 agreement on outputs that are evidently class scores")
    comp.add_argument("--strict", action="store_true",
                      help="refuse (exit 2, nothing written) a --prune/--sparsity/forced --quant result that loses "
                           "more than 0.05 of the metric, instead of writing it with a warning (exit 3)")
    comp.add_argument("--prune", type=float, help="share of MACs to remove by structured channel pruning, e.g. 0.3")
    comp.add_argument("--sparsity", help="zero single weights: a share (e.g. 0.8, stored sparse) or 2:4")
    comp.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                      help="skip: go on without a pass that fails (undone, listed in the report)")
    comp.add_argument("--json", action="store_true", help="print the full report as JSON")
    comp.set_defaults(func=_cmd_compile)
    expl = sub.add_parser("explain", help="which layers cost accuracy in a model hewn quantized (reads its report)")
    expl.add_argument("model", help="a model hewn compiled (its .report.json is read beside it)")
    expl.add_argument("--top", type=int, default=10, help="how many layers to list (default 10)")
    expl.set_defaults(func=_cmd_explain)
    rep = sub.add_parser("report", help="(re)write the HTML report beside a model hewn compiled, from its JSON")
    rep.add_argument("model", help="a model hewn compiled (its .report.json is read beside it)")
    rep.add_argument("--open", action="store_true", help="open it in the default browser")
    rep.set_defaults(func=_cmd_report)
    ben = sub.add_parser("bench", help="time a model against its compiled version in ONNX Runtime on this machine")
    ben.add_argument("model", help="the original .onnx model")
    ben.add_argument("--compiled", help="a compiled model to compare; default: compile the model for cpu now")
    ben.add_argument("--runs", type=int, default=50, help="timed runs of each model, interleaved (default 50)")
    ben.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    ben.add_argument("--json", action="store_true", help="print the figures as JSON")
    ben.set_defaults(func=_cmd_bench)
    insp = sub.add_parser("inspect", help="ops, params, MACs, opset, inputs/outputs of an ONNX model")
    insp.add_argument("model", help="an .onnx file (never modified)")
    insp.add_argument("--json", action="store_true", help="print the figures as JSON")
    insp.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hewn.core import progress

    from hewn.core.interrupt import Terminated, signals_unwind

    progress.configure(False if getattr(args, "json", False) else None)  # --json: stdout and stderr stay clean
    stdout, sys.stdout = sys.stdout, _Printable(sys.stdout)   # no ESC sequence from a crafted name reaches it
    try:
        with signals_unwind():
            return args.func(args)
    except HewnError as exc:
        print(f"hewn: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"hewn: {exc}; nothing was written (earlier outputs are as they were)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("hewn: interrupted; nothing was written (earlier outputs are as they were)", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line; HEWN_DEBUG=1 shows where
        if os.environ.get("HEWN_DEBUG") == "1":
            raise
        print(f"hewn: internal error: {type(exc).__name__}: {printable(str(exc).splitlines()[0] if str(exc) else '')} "
              f"(a bug in hewn; rerun with HEWN_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout


class _Printable:
    """stdout with control characters other than newlines escaped (core.errors.printable)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text, keep_newlines=True))

    def __getattr__(self, name):
        return getattr(self._stream, name)


if __name__ == "__main__":
    sys.exit(main())
