"""The ONNX frontend: load the model, fit its opset to the target, and compute the reference
(seeded or user inputs, and the original's outputs on them) that every pass is checked against."""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from hewn.core.errors import HewnError, InputMismatchError, UnsupportedModelError
from hewn.core.ir import default_opset, load_model, upgrade_opset
from hewn.core.pass_infra import Reference
from hewn.core.runtime import input_specs, integer_bounds, make_session, run_all, seeded_inputs, to_feeds
from hewn.frontends.source import Source

VERIFY_SAMPLES = 2       # seeded inputs when the user gives none
MAX_USER_SAMPLES = 8     # of calib_data used for verification


def load(model) -> Source:
    path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    loaded = load_model(model)
    info = {"kind": "onnx", "source": str(model) if path else "ModelProto",
            "opset": default_opset(loaded), "ir_version": loaded.ir_version}
    return Source(loaded, info, path)


def fit_opset(model: onnx.ModelProto, profile, info: dict, needed: int) -> onnx.ModelProto:
    """Refuse opsets the target's runtime does not take; upgrade only when a pass needs it
    (the converter can add nodes, e.g. Flatten/Reshape around an opset-9 Softmax)."""
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
    return upgrade_opset(model, target, "the input model")


def samples(data) -> list:
    """A list of input samples, or a function returning an iterable of them."""
    source = data() if callable(data) else data
    if not hasattr(source, "__iter__") or isinstance(source, (str, bytes)):
        raise InputMismatchError(f"expected a list of input samples, got {type(data).__name__}")
    return list(source)


def reference(model: onnx.ModelProto, example_inputs, calib_data, info: dict) -> Reference:
    """Verification inputs (calib_data, else example_inputs, else seeded) and the original's outputs."""
    specs = input_specs(model)
    if calib_data is not None:
        source = calib_data() if callable(calib_data) else calib_data
        if not hasattr(source, "__iter__") or isinstance(source, (str, bytes)):
            raise InputMismatchError(f"calib_data must be a list of input samples or a function returning "
                                     f"an iterable of them, got {type(calib_data).__name__}")
        feeds = [to_feeds(s, specs, f"calib_data[{i}]") for i, s in zip(range(MAX_USER_SAMPLES), source)]
        if not feeds:
            raise InputMismatchError("calib_data is empty: give at least one input sample")
        info["verification_inputs"] = f"{len(feeds)} calib_data samples"
    elif example_inputs is not None:
        feeds = [to_feeds(example_inputs, specs, "example_inputs")]
        info["verification_inputs"] = "example_inputs"
    else:
        feeds = seeded_inputs(specs, VERIFY_SAMPLES, seed=0, bounds=integer_bounds(model))
        info["verification_inputs"] = f"{VERIFY_SAMPLES} seeded random samples"
    try:
        outputs = run_all(make_session(model), feeds)
    except HewnError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"ONNX Runtime cannot run the input model: {str(exc).strip().splitlines()[0]}"
        ) from None
    return Reference(feeds, outputs)
