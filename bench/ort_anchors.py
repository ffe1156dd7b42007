"""The other tools' quantizers as the benches run them, one definition for bench and bench.real:
ONNX Runtime's quantize_static (QDQ, per-channel weights) and NNCF's post-training quantization
on its ONNX backend (nncf.quantize with the preset its docs give for the model's activations)."""
from __future__ import annotations

from pathlib import Path


def ort_quantize_static(fp32: Path, out: Path, calib, **kw) -> None:
    """quantize_static in QDQ format with per-channel weights, calibrated on `calib` (input dicts)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, **kw)


NNCF_MIN_OPSET = 13   # below it nncf's ONNX backend quantizes weights per tensor (DequantizeLinear has no axis)


def nncf_quantize(fp32: Path, out: Path, calib, *, transformer: bool = False) -> dict:
    """nncf.quantize (ONNX backend, post-training, fast bias correction as by default) calibrated on
    `calib` (input dicts, as ORT takes them), saved to `out` with onnx.save. The preset is nncf's
    default (PERFORMANCE: symmetric weights and activations) unless the net has SiLU/HardSwish
    activations (not ReLU-bounded: asymmetric activations, preset MIXED); transformer=True passes
    model_type=TRANSFORMER (whose default preset is MIXED). A model below opset 13 is converted to
    13 first so that weights are per-channel. Returns what was chosen: {preset, model_type,
    unbounded_activations, opset}."""
    import logging

    import nncf
    import onnx

    nncf.set_log_level(logging.ERROR)
    model = onnx.load(str(fp32))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    info = {"opset": str(opset)}
    if opset < NNCF_MIN_OPSET:
        model = onnx.version_converter.convert_version(model, NNCF_MIN_OPSET)
        info["opset"] = f"{opset}->{NNCF_MIN_OPSET}"
    unbounded = sorted(unbounded_activations(model))
    kwargs = {"subset_size": len(calib)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    elif unbounded:
        kwargs["preset"] = nncf.QuantizationPreset.MIXED
    quantized = nncf.quantize(model, nncf.Dataset(list(calib)), **kwargs)
    onnx.save(quantized, str(out))
    preset = kwargs.get("preset", nncf.QuantizationPreset.MIXED if transformer else nncf.QuantizationPreset.PERFORMANCE)
    return {**info, "preset": str(preset.value), "model_type": "transformer" if transformer else None,
            "unbounded_activations": unbounded}


def unbounded_activations(model) -> set[str]:
    """The activations of `model` that are not ReLU-bounded, found as graphs spell them: HardSwish /
    Swish ops, or x * f(x) with f a chain (up to 3 nodes) of Sigmoid (SiLU) or HardSigmoid / Clip
    with Add / Div / Mul by constants (HardSwish, as x * Clip(x + 3, 0, 6) / 6)."""
    found = {n.op_type for n in model.graph.node if n.op_type in ("HardSwish", "Swish", "Mish", "Gelu")}
    producer = {o: n for n in model.graph.node for o in n.output}
    constant = {i.name for i in model.graph.initializer} | {n.output[0] for n in model.graph.node
                                                             if n.op_type == "Constant"}
    chain_ops = {"Sigmoid": "SiLU", "HardSigmoid": "HardSwish", "Clip": "HardSwish"}
    for node in model.graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for x, other in (node.input, node.input[::-1]):
            kinds, tensor = set(), other
            for _ in range(3):
                prev = producer.get(tensor)
                if prev is None or prev.op_type not in (*chain_ops, "Add", "Div", "Mul"):
                    break
                kinds.add(chain_ops.get(prev.op_type))
                inputs = [i for i in prev.input if i and i not in constant]
                if prev.op_type in chain_ops:
                    inputs = inputs[:1]   # Clip's min/max are inputs too
                if len(inputs) != 1:
                    break
                tensor = inputs[0]
                if tensor == x and kinds - {None}:
                    found.add("SiLU" if "SiLU" in kinds else "HardSwish")
                    break
    return found
