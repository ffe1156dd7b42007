"""Side-by-side benchmark: FP32 ONNX vs hewn vs ORT quantize_static/dynamic, NNCF and Torch-Pruning, one process.

    python -m bench [--models digits_cnn,resnet18,mobilenetv2,minilm] [--runs 50] [--batch 1] [--out bench/results]

Latency is timed interleaved (round-robin over the variants, so machine drift hits all alike),
ORT CPU EP, intra_op_num_threads=2, spinning off (ANCHORS.md), batch 1, reported as the median
ratio to FP32. --batch N exports, calibrates and times every variant at N samples per run: small
models at batch 1 are bound by per-op overhead, which no compression removes. Quality: accuracy
on the digits test split, cosine to the FP32 embeddings on real sentences for all-MiniLM-L6-v2,
output cosine to FP32 for the latency-only CNNs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _workload(name: str, batch: int = 1):
    """(torch module, example_inputs, eval feeds, quality fn(outputs, fp32_outputs) -> dict, calib feeds),
    every feed a batch of `batch` samples (the last one filled up by wrapping around)."""
    import torch

    from hewn.models import REFERENCE_MODELS

    if name == "digits_cnn":
        from hewn.models.digits import digits_cnn

        model, data = digits_cnn()
        feeds = [{"x": x} for x in _batches(data.x_test, batch)]
        calib = [{"x": x} for x in _batches(data.x_train[:max(64, batch * 2)], batch)]

        def quality(outs, ref):
            return {"accuracy": digits_accuracy(outs, data.y_test)}

        return model, (torch.from_numpy(feeds[0]["x"]),), feeds, quality, calib
    if name == "minilm":
        from hewn.models.minilm import encode, load_minilm, sentences

        model, tok = load_minilm()
        ids, mask = encode(tok, sentences())
        feeds = [{"input_ids": i, "attention_mask": m}
                 for i, m in zip(_batches(ids.numpy(), batch), _batches(mask.numpy(), batch))]
        first = feeds[0]
        return (model, (torch.from_numpy(first["input_ids"]), torch.from_numpy(first["attention_mask"])), feeds,
                _cosine, feeds[:max(1, 32 // batch)])
    model, inputs = REFERENCE_MODELS[name]()
    rng = np.random.default_rng(0)
    shape = (batch, *tuple(inputs[0].shape)[1:])
    feeds = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]
    return model, (torch.from_numpy(feeds[0]["x"]),), feeds, _cosine, feeds


def _batches(array: np.ndarray, batch: int) -> list:
    count = -(-len(array) // batch)
    filled = np.resize(array, (count * batch, *array.shape[1:]))  # wraps around to fill the last batch
    return [filled[i:i + batch] for i in range(0, len(filled), batch)]


def digits_accuracy(outs, labels: np.ndarray) -> float:
    pred = np.concatenate([np.asarray(o[0]).argmax(-1).ravel() for o in outs])[:len(labels)]
    return float((pred == labels).mean())


def _cosine(outs, ref):
    """Mean cosine to FP32 per sample (row) of the first output."""
    a = np.concatenate([np.asarray(o[0]).reshape(len(o[0]), -1) for o in outs]).astype(np.float64)
    b = np.concatenate([np.asarray(r[0]).reshape(len(r[0]), -1) for r in ref]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"cosine_to_fp32": float(cos.mean())}


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_quantize_static(fp32: Path, out: Path, calib, **kw) -> None:
    from bench.ort_anchors import ort_quantize_static

    ort_quantize_static(fp32, out, calib, **kw)


def _variants(name: str, folder: Path, runs_info: dict, plan: bool = True, batch: int = 1):
    from hewn import compile
    from hewn.frontends.from_torch import capture, export_onnx
    from onnxruntime.quantization import QuantType

    model, inputs, feeds, quality, calib = _workload(name, batch)
    fp32 = folder / f"{name}_fp32.onnx"
    onnx.save(export_onnx(capture(model, inputs), 17), str(fp32))
    variants = {"fp32": fp32}
    start = time.perf_counter()
    result = compile(str(fp32), "cpu")
    runs_info[f"{name}/hewn cpu (cleanup + fusions)"] = {"compile_s": round(time.perf_counter() - start, 2)}
    variants["hewn cpu (cleanup + fusions)"] = result.save(folder / f"{name}_hewn.onnx")
    for label, kw in (("ORT quantize_static S8S8", {}),
                      ("ORT quantize_static U8S8+reduce_range",
                       {"activation_type": QuantType.QUInt8, "reduce_range": True})):
        out = folder / f"{name}_{label.split()[-1].replace('+', '_')}.onnx"
        start = time.perf_counter()
        try:
            _ort_quantize_static(fp32, out, calib, **kw)
            variants[label] = out
            runs_info[f"{name}/{label}"] = {"compile_s": round(time.perf_counter() - start, 2)}
        except Exception as exc:  # an anchor failing is a result too
            runs_info[f"{name}/{label}"] = {"error": str(exc).splitlines()[0][:200]}
    _quantized_variants(name, fp32, folder, calib, variants, runs_info)
    if name in PRUNED:
        _pruned_variants(name, model, inputs, folder, variants, runs_info)
    if name == "minilm":
        _minilm_distilled(model, inputs, feeds, folder, variants, runs_info)
    if plan:
        _planned_variants(name, model, inputs, feeds, calib, folder, variants, runs_info)
    return variants, feeds, quality


MINILM_FFN_SHARE = 0.316   # the FFN's share of MiniLM's MACs at seq 128: pruning this much is half its channels
MINILM_DISTILL = {"steps": 150, "batch": 16, "lr": 3e-4}


def _minilm_distilled(model, inputs, feeds, folder: Path, variants: dict, runs_info: dict) -> None:
    """Half of every FFN's intermediate channels pruned (attention kept), then distilled against the
    original's embeddings on unlabeled text disjoint from the eval sentences; the report's cosine
    on the eval sentences before and after training shows what distillation won back."""

    from hewn import compile
    from hewn.passes.distill.train import DistillConfig
    from hewn.models.minilm import encode, load_tokenizer, training_sentences
    from hewn.passes.prune.prune_plan import PruneConfig

    def distilled(out):
        ids, mask = encode(load_tokenizer(), training_sentences())
        size, steps = MINILM_DISTILL["batch"], MINILM_DISTILL["steps"]
        epochs = math.ceil(steps / (len(ids) // size))
        train = shuffled_batches((ids, mask), size, epochs, drop_last=True)[:steps]
        result = compile(model, "cpu", example_inputs=inputs, prune=PruneConfig(amount=MINILM_FFN_SHARE,
                                                                                 exclude=("*attention*",)),
                         train_data=train, eval_data=[tuple(f.values()) for f in feeds], quantize=False,
                         distill=DistillConfig(steps=steps, lr=MINILM_DISTILL["lr"], progress=False))
        result.save(out)
        return {"macs_kept": round(1 - result.report["pruning"]["reached"], 3),
                "distill": _distill_cell(result.report["distill"])}

    _timed("hewn prune FFN 50% + distill", "minilm", runs_info, variants, folder / "minilm_distilled.onnx", distilled)


def shuffled_batches(tensors: tuple, size: int, epochs: int, drop_last: bool = False, seed: int = 0) -> list[tuple]:
    """`epochs` passes over `tensors` (sliced together along dim 0), each in a fresh seeded order."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    count = len(tensors[0])
    stop = count - size + 1 if drop_last else count
    batches = []
    for _ in range(epochs):
        order = torch.randperm(count, generator=gen)
        batches += [tuple(t[order[i:i + size]] for t in tensors) for i in range(0, stop, size)]
    return batches


def _distill_cell(log: dict) -> str:
    return f"cos {log['cosine_before']:.3f} -> {log['cosine_after']:.3f} in {log['steps']} steps"


PLAN_BUDGET = {"digits_cnn": 0.01, "resnet18": 0.02, "mobilenetv2": 0.02, "minilm": 0.02}


def _planned_variants(name, model, inputs, feeds, calib, folder: Path, variants: dict, runs_info: dict) -> None:
    """compile(accuracy_budget=...): the planner (prune ratio + SVD rank per layer, then int8) under
    one budget. digits: accuracy within 1 pt on the test split, with distillation on the unlabeled
    training images; the others: output cosine >= 1 - budget, no fine-tune."""
    from hewn import compile
    from hewn.passes.distill.train import DistillConfig

    budget = PLAN_BUDGET[name]
    kw = {}
    label = f"hewn plan (budget {budget})"
    if name == "digits_cnn":
        import torch

        from hewn.models.digits import load_data

        data = load_data()
        kw["eval_data"] = [(f["x"],) for f in feeds]
        kw["metric"] = lambda outs: digits_accuracy(outs, data.y_test)
        kw["train_data"] = shuffled_batches((torch.from_numpy(data.x_train),), 64, FINETUNE_EPOCHS)
        kw["distill"] = DistillConfig(lr=3e-3, progress=False)
        label = "hewn plan (1 pt) + distill"

        def distilled(out):
            result = compile(model, "cpu", example_inputs=inputs, prune=0.5, train_data=kw["train_data"],
                             eval_data=kw["eval_data"], distill=kw["distill"])
            result.save(out)
            return {"macs_kept": round(1 - result.report["pruning"]["reached"], 3),
                    "distill": _distill_cell(result.report["distill"])}

        _timed("hewn prune 50% MACs + distill", name, runs_info, variants, folder / f"{name}_distilled.onnx",
               distilled)

    def planned(out):
        result = compile(model, "cpu", example_inputs=inputs, calib_data=[tuple(f.values()) for f in calib],
                         accuracy_budget=budget, **kw)
        result.save(out)
        plan = result.report["plan"]
        return {"macs_kept": round(result.report["after"]["macs"] / max(result.report["before"]["macs"], 1), 3),
                "scheme": (result.report.get("quantization", {}).get("chosen") or {}).get("scheme", "float"),
                "plan": f"{len(plan['choices'])} choices, {len(plan['rollbacks'])} rollbacks"}

    _timed(label, name, runs_info, variants, folder / f"{name}_planned.onnx", planned)


def _timed(label: str, name: str, runs_info: dict, variants: dict, out: Path, make) -> None:
    """Run one tool; record its wall time, or its failure (an anchor failing is a result too)."""
    start = time.perf_counter()
    try:
        extra = make(out) or {}
        variants[label] = out
        runs_info[f"{name}/{label}"] = {"compile_s": round(time.perf_counter() - start, 2), **extra}
    except Exception as exc:
        runs_info[f"{name}/{label}"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}


def _quantized_variants(name, fp32: Path, folder: Path, calib, variants: dict, runs_info: dict) -> None:
    """hewn int8 (scheme measured on this machine) vs ORT quantize_dynamic and NNCF PTQ, same calibration data."""
    from hewn import compile

    def hewn(out):
        result = compile(str(fp32), "cpu", calib_data=calib)
        result.save(out)
        q = result.report.get("quantization", {})
        chosen = q.get("chosen", {})
        return {"scheme": chosen.get("scheme", q.get("kept_float", "float")),
                "int8_coverage": round(q.get("int8_coverage", {}).get("coverage", 0.0), 3)}

    def ort_dynamic(out):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8)

    def nncf_ptq(out):
        import nncf

        kw = {"model_type": nncf.ModelType.TRANSFORMER} if name == "minilm" else {}
        quantized = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(calib), subset_size=len(calib), **kw)
        onnx.save(quantized, str(out))

    def hewn_mobile(out):
        result = compile(str(fp32), "mobile", calib_data=calib)
        result.save(out)
        return {"scheme": (result.report.get("quantization", {}).get("chosen") or {}).get("scheme", "float"),
                "unsupported_ops": result.report.get("op_support", {}).get("unsupported_nodes", 0)}

    def hewn_sparse(out):
        result = compile(str(fp32), "cpu", sparsity=0.8, measure_latency=False)
        result.save(out)
        return {"sparsity": result.report["sparsity"]["sparsity"]}

    _timed("hewn int8 (cpu)", name, runs_info, variants, folder / f"{name}_hewn_int8.onnx", hewn)
    # mobile's output timed on this CPU EP: a proxy for layout cost, not a phone measurement
    _timed("hewn mobile int8 (timed on CPU EP)", name, runs_info, variants, folder / f"{name}_hewn_mobile.onnx",
           hewn_mobile)
    _timed("hewn 80% unstructured sparsity (file size)", name, runs_info, variants,
           folder / f"{name}_hewn_sparse.onnx", hewn_sparse)
    _timed("ORT quantize_dynamic per-channel", name, runs_info, variants, folder / f"{name}_ort_dyn.onnx", ort_dynamic)
    _timed("NNCF PTQ", name, runs_info, variants, folder / f"{name}_nncf.onnx", nncf_ptq)


PRUNED = ("digits_cnn", "resnet18", "mobilenetv2")
FINETUNE_EPOCHS = 5  # the same short fine-tune for hewn and Torch-Pruning (digits only: it has labels)


def _pruned_variants(name, model, inputs, folder: Path, variants: dict, runs_info: dict) -> None:
    """hewn structured pruning at 50% of MACs vs Torch-Pruning at the same MAC budget, L1 magnitude."""
    from hewn import compile
    from hewn.passes.prune.fx_channels import prune_torch
    from hewn.passes.prune.prune_plan import PruneConfig

    start = time.perf_counter()
    pruned, stats = prune_torch(model, inputs, PruneConfig(amount=0.5, importance="l1"))
    _finetune(name, pruned)
    result = compile(pruned, "cpu", example_inputs=inputs)
    runs_info[f"{name}/hewn prune 50% MACs"] = {"compile_s": round(time.perf_counter() - start, 2),
                                                "macs_kept": round(1 - stats["reached"], 3)}
    variants["hewn prune 50% MACs"] = result.save(folder / f"{name}_hewn_pruned.onnx")
    start = time.perf_counter()
    try:
        tp_model, kept = _torch_pruning(model, inputs)
    except Exception as exc:  # an anchor failing (or missing) is a result too
        runs_info[f"{name}/Torch-Pruning 50% MACs"] = {"error": str(exc).splitlines()[0][:200]}
        return
    _finetune(name, tp_model)
    from hewn.frontends.from_torch import capture, export_onnx

    out = folder / f"{name}_tp_pruned.onnx"
    onnx.save(export_onnx(capture(tp_model, inputs), 17), str(out))
    variants["Torch-Pruning 50% MACs"] = out
    runs_info[f"{name}/Torch-Pruning 50% MACs"] = {"compile_s": round(time.perf_counter() - start, 2),
                                                   "macs_kept": round(kept, 3)}


def _finetune(name: str, module) -> None:
    if name != "digits_cnn":
        return
    from hewn.models.digits import load_data, train

    train(module, load_data(), epochs=FINETUNE_EPOCHS)


def _torch_pruning(model, inputs):
    """Torch-Pruning's MetaPruner with L1 magnitude, ratio searched until half the MACs are gone."""
    import copy

    import torch
    import torch_pruning as tp

    base_macs, _ = tp.utils.count_ops_and_params(model, inputs)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]

    def pruned_at(ratio):
        m = copy.deepcopy(model).eval()
        pruner = tp.pruner.MetaPruner(m, inputs, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=ratio, ignored_layers=[copy_of(m, model, l) for l in last],
                                      round_to=8)
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(m, inputs)
        return m, macs / base_macs

    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        m, kept = pruned_at(mid)
        if kept <= 0.5:
            hi, best = mid, (m, kept)
        else:
            lo = mid
    return best if best is not None else pruned_at(hi)


def copy_of(new_root, old_root, old_module):
    names = {id(m): n for n, m in old_root.named_modules()}
    return new_root.get_submodule(names[id(old_module)])


def _time_interleaved(sessions: dict, feed: dict, runs: int) -> dict:
    from hewn.core.runtime import time_interleaved

    medians, _ = time_interleaved(list(sessions.values()), feed, runs, warmup=5)
    return dict(zip(sessions, medians))


def bench_model(name: str, folder: Path, runs: int, plan: bool = True, batch: int = 1) -> list[dict]:
    info: dict = {}
    variants, feeds, quality = _variants(name, folder, info, plan, batch)
    sessions = {k: _session(p) for k, p in variants.items()}
    latency = _time_interleaved(sessions, feeds[0], runs)
    ref = [sessions["fp32"].run(None, f) for f in feeds]
    rows = []
    for key, session in sessions.items():
        outs = ref if key == "fp32" else [session.run(None, f) for f in feeds]
        rows.append({"model": name, "batch": batch, "variant": key, "latency_ms": round(latency[key] * 1e3, 3),
                     "ratio_to_fp32": round(latency[key] / latency["fp32"], 3),
                     "file_mb": round(variants[key].stat().st_size / 1e6, 2), **quality(outs, ref),
                     **info.get(f"{name}/{key}", {})})
    rows += [{"model": name, "batch": batch, "variant": k.split("/", 1)[1], **v} for k, v in info.items()
             if "error" in v]
    return rows


def to_markdown(rows: list[dict], header: str) -> str:
    cols = ["model", "batch", "variant", "ratio_to_fp32", "latency_ms", "accuracy", "cosine_to_fp32", "macs_kept",
            "scheme", "int8_coverage", "plan", "distill", "sparsity", "file_mb", "compile_s", "error"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--models", default="digits_cnn,resnet18,mobilenetv2,minilm")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-plan", action="store_true", help="skip the planner rows (the slowest to compile)")
    parser.add_argument("--batch", type=int, default=1,
                        help="samples per run: every variant is exported, calibrated and timed at this batch")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hewn-bench-") as tmp:
        for name in args.models.split(","):
            print(f"[bench] {name} ...", flush=True)
            rows += bench_model(name, Path(tmp), args.runs, plan=not args.no_plan, batch=args.batch)
    command = " ".join(["python -m bench", f"--models {args.models}", f"--runs {args.runs}",
                        *([f"--batch {args.batch}"] if args.batch != 1 else []),
                        *(["--no-plan"] if args.no_plan else [])])
    header = (f"hewn bench, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, ORT {ort.__version__} CPU EP, 2 threads, batch {args.batch}, "
              f"median of {args.runs} interleaved runs; `{command}`")
    md = to_markdown(rows, header)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
