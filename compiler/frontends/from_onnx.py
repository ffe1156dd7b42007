"""The ONNX frontend: load the model, fit its opset to the target, and compute the reference
(seeded or user inputs, and the original's outputs on them) that every pass is checked against."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from hewn.core.errors import HewnError, InputMismatchError, UnsupportedModelError
from hewn.core.ir import default_opset, load_model, upgrade_opset
from hewn.core.pass_infra import Reference
from hewn.core.measure import compare
from hewn.core.runtime import (input_specs, integer_bounds, make_session, run_all, seeded_inputs, spread,
                               to_feeds, user_samples)
from hewn.frontends.source import Source

VERIFY_SAMPLES = 2       # seeded inputs when the user gives none
MAX_USER_SAMPLES = 8     # of a small calib_data (all seen by calibration) used for verification
HOLD_OUT_FROM = 32       # from this many calib_data samples on, verification holds some out...
HELD_OUT = 64            # ... half of them, at most this many: budgets are judged on what calibration never saw


def load(model, base_dir=None) -> Source:
    path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    loaded = load_model(model, base_dir)
    for value in loaded.graph.output:  # (inputs: input_specs says the same of them)
        if not value.type.HasField("tensor_type"):
            kind = (value.type.WhichOneof("value") or "untyped").replace("_type", "")
            raise UnsupportedModelError(f"output '{value.name}' is a {kind} value; hewn compiles models whose inputs "
                                        f"and outputs are tensors: wrap the model so that it returns tensors")
    info = {"kind": "onnx", "source": str(model) if path else "ModelProto",
            "opset": default_opset(loaded), "ir_version": loaded.ir_version}
    return Source(loaded, info, path)


def fit_opset(model: onnx.ModelProto, profile, info: dict, needed: int, feeds=None) -> onnx.ModelProto:
    """Refuse opsets the target's runtime does not take; upgrade only when a pass needs it
    (the converter can add nodes, e.g. Flatten/Reshape around an opset-9 Softmax). With `feeds`,
    the upgrade is verified right away: the converter can change what a node computes
    (Upsample(linear) -> Resize), and that must not be blamed on the passes after it."""
    opset = default_opset(model)
    low, high = profile.opset_range
    if opset > high:
        raise UnsupportedModelError(
            f"the model uses opset {opset}, newer than target '{profile.name}' supports ({low}-{high}); "
            f"export it at opset {high} or lower"
        )
    target = max(needed, low)
    if opset >= target:
        return model
    info["opset_upgraded_to"] = target
    upgraded = upgrade_opset(model, target, "the input model")
    if feeds:
        _check_upgrade(model, upgraded, feeds, opset, target)
    return upgraded


def _check_upgrade(model: onnx.ModelProto, upgraded: onnx.ModelProto, feeds, opset: int, target: int) -> None:
    before = run_all(make_session(model), feeds)
    try:
        cmp = compare(before, run_all(make_session(upgraded), feeds), rtol=1e-4, atol=1e-5)
        what = f"changes the model's outputs (max abs error {cmp.max_abs:.3g})"
    except HewnError:
        raise
    except Exception as exc:  # e.g. opset-8 Scan's batch axis: the upgraded graph rejects the same inputs
        cmp, what = None, f"gives a model ONNX Runtime cannot run on the same inputs ({str(exc).splitlines()[0][:200]})"
    if cmp is not None and cmp.passed:
        return
    ops = lambda m: {n.op_type for n in m.graph.node}  # noqa: E731
    gone, new = sorted(ops(model) - ops(upgraded)), sorted(ops(upgraded) - ops(model))
    changed = f" ({', '.join(gone)} became {', '.join(new)})" if gone and new else ""
    raise UnsupportedModelError(
        f"onnx.version_converter's upgrade from opset {opset} to {target}{changed} {what}; hewn needs opset "
        f"{target}. Export the model at opset {target} or newer yourself")


def _source(data, where: str):
    """The iterable behind the user's data: a list of samples, or a function returning an iterable."""
    source = data() if callable(data) else data
    if not hasattr(source, "__iter__") or isinstance(source, (str, bytes)):
        raise InputMismatchError(f"{where} must be a list of input samples or a function returning "
                                 f"an iterable of them, got {type(data).__name__}")
    return source


def samples(data, where: str = "the data") -> list:
    """All samples of `data`; an error its source raises is reported as the user's (user_samples)."""
    return list(user_samples(_source(data, where), where))


def reference(model: onnx.ModelProto, examples: list, calib_data, info: dict, second_size=()) -> Reference:
    """Verification inputs (calib_data, else the user's examples, else seeded; plus `second_size`,
    the example at another size along the dynamic dims) and the original's outputs."""
    specs = input_specs(model)
    bf16 = [s.name for s in specs if np.dtype(s.dtype).name == "bfloat16"]
    if bf16:  # not a guess gone wrong: no input of that type can be fed from Python at all
        raise UnsupportedModelError(
            f"input '{bf16[0]}' is bfloat16, which ONNX Runtime's Python API cannot feed, so hewn cannot run or "
            f"verify the model; give the model a float16/float32 input and Cast it to bfloat16 inside")
    held_out = frozenset()
    if calib_data is not None:
        source = user_samples(_source(calib_data, "calib_data"), "calib_data")
        chosen, total = spread(enumerate(source), HELD_OUT)
        if not chosen:
            raise InputMismatchError("calib_data is empty: give at least one input sample")
        if total >= HOLD_OUT_FROM:   # judged on samples calibration never sees
            keep = min(HELD_OUT, total // 2)
            chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, keep).round().astype(int)]
            held_out = frozenset(i for i, _ in chosen)
            info["verification_inputs"] = (f"{len(chosen)} of {total} calib_data samples, spread over all of them "
                                           f"and held out: calibration uses the other {total - len(chosen)}")
        else:
            chosen = spread(chosen, MAX_USER_SAMPLES)[0]   # all of them, in order: as spread over the stream
            info["verification_inputs"] = (f"{len(chosen)} of {total} calib_data samples, spread over all of them "
                                           f"(calibration sees them too: not held out; give {HOLD_OUT_FROM} or more "
                                           f"samples and hewn holds some out)")
        feeds = [to_feeds(s, specs, f"calib_data[{i}]") for i, s in chosen]
    elif examples:
        feeds = [to_feeds(e, specs, "example_inputs") for e in examples]
        info["verification_inputs"] = "example_inputs" + (f" and {len(feeds) - 1} perturbed copy" if len(feeds) > 1 else "")
    else:
        feeds = seeded_inputs(specs, VERIFY_SAMPLES, seed=0, bounds=integer_bounds(model))
        info["verification_inputs"] = f"{VERIFY_SAMPLES} seeded random samples"
    if second_size:
        feeds += [to_feeds(e, specs, "example_inputs at a second size") for e in second_size]
        shapes = ", ".join(f"{s.name} {list(v.shape)}" for s, v in zip(specs, feeds[-1].values()))
        info["verification_inputs"] += f", and the example at a second size ({shapes})"
    try:
        outputs = run_all(make_session(model), feeds)
    except HewnError:
        raise
    except Exception as exc:
        why = str(exc).strip().splitlines()[0]
        if calib_data is None and not examples:
            raise UnsupportedModelError(
                f"ONNX Runtime cannot run the input model on the inputs hewn guessed for it (seeded random "
                f"values: {', '.join(f'{k} {v.shape} {v.dtype}' for k, v in feeds[0].items())}): {why}. Pass real "
                f"inputs with example_inputs= (or calib_data=, --calib)") from None
        raise UnsupportedModelError(f"ONNX Runtime cannot run the input model: {why}") from None
    return Reference(feeds, outputs, held_out=held_out)
