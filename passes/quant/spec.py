"""QuantSpec and QuantScheme: *what* a tensor edge is quantized to (pt2e's "decide" step).

A target profile lists the schemes its runtime accelerates; `QuantSpec.params(lo, hi)` turns a
calibrated range into (scale, zero_point) the way ONNX QuantizeLinear reads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

_QRANGE = {"uint8": (0, 255), "int8": (-128, 127)}
# The smallest scale hewn emits: a zero-range tensor (all zeros) gets 1.0, never 0 (division).
MIN_SCALE = 1e-12


@dataclass(frozen=True)
class QuantSpec:
    """One tensor's quantization: dtype, symmetric (zero point 0) or not, per-channel axis.

    `narrow` is ORT's reduce_range: 7-bit magnitudes, so that uint8 x int8 products summed in
    pairs cannot saturate int16 (AVX2 without VNNI, ANCHORS.md)."""

    dtype: str = "uint8"
    symmetric: bool = False
    axis: Optional[int] = None
    narrow: bool = False

    def qrange(self) -> tuple[int, int]:
        lo, hi = _QRANGE[self.dtype]
        if self.narrow:
            return (-64, 64) if self.dtype == "int8" else (0, 127)
        if self.symmetric and self.dtype == "int8":
            return -127, 127  # keep the grid symmetric around zero point 0
        return lo, hi

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def params(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """(scale float32, zero_point of `dtype`) for ranges lo..hi (scalars or per-channel arrays).
        The range always includes 0 so that zero (padding, ReLU) is exact."""
        qmin, qmax = self.qrange()
        lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
        hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
        if self.symmetric:  # zero point 0 (int8) or the middle of the grid (uint8)
            mid = 0 if self.dtype == "int8" else (qmax + 1) // 2
            scale = np.maximum(-lo, hi) / min(mid - qmin, qmax - mid)
            scale = np.where(scale > MIN_SCALE, scale, 1.0)
            zero = np.full(np.shape(scale), mid)
        else:
            scale = (hi - lo) / (qmax - qmin)
            scale = np.where(scale > MIN_SCALE, scale, 1.0)
            zero = np.clip(np.round(qmin - lo / scale), qmin, qmax)
        return np.asarray(scale, np.float32), np.asarray(zero).astype(self.np_dtype)

    def quantize(self, x: np.ndarray, scale, zero, axis: Optional[int] = None) -> np.ndarray:
        """Round-to-nearest-even and saturate, as QuantizeLinear does."""
        qmin, qmax = self.qrange()
        scale, zero = np.asarray(scale, np.float32), np.asarray(zero).astype(np.int64)
        if axis is not None and scale.ndim == 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        q = np.round(x.astype(np.float32) / scale) + zero
        return np.clip(q, qmin, qmax).astype(self.np_dtype)


@dataclass(frozen=True)
class QuantScheme:
    """How a target quantizes a whole model.

    `static_ops`: ops whose float inputs and outputs get Q/DQ with calibrated ranges (ORT fuses
    DQ -> op -> Q into QLinearConv, QGemm, QLinearMatMul, QLinearAdd, ...). `passthrough_ops`
    move data without changing values, so their output shares the input's scale (ORT then runs
    them on int8). `dynamic_ops`: MatMul/Gemm with a constant weight whose activation is
    quantized at run time (DynamicQuantizeMatMul); they take precedence over static_ops.
    """

    name: str
    activation: QuantSpec
    weight: QuantSpec
    per_channel: bool = True
    static_ops: tuple[str, ...] = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Concat",
                                   "GlobalAveragePool", "AveragePool")
    passthrough_ops: tuple[str, ...] = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")
    # Activations these ops produce are quantized at their output instead of their input's
    # producer: Q with zero point = qmin clamps at 0 exactly, so ORT drops the op (Relu/Clip fusion).
    absorbed_ops: tuple[str, ...] = ("Relu", "Clip")
    dynamic_ops: tuple[str, ...] = ()
    bias_int32: bool = True
    # TensorRT-style explicit quantization: Q/DQ only on the inputs of weighted ops (the builder
    # fuses the following Q into the op's epilogue), Add only where it is a residual join.
    quantize_outputs: bool = True
    residual_add_only: bool = False
    # Convs with fewer channels, GEMMs with a smaller K or N, stay float: int8 kernels pad them
    # to 16 and run slower than fp16 (TensorRT best practices).
    min_channels: int = 0
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> dict:
        a, w = self.activation, self.weight
        return {"name": self.name, "activations": f"{a.dtype} {'symmetric' if a.symmetric else 'asymmetric'}",
                "weights": f"{w.dtype} symmetric{' 7-bit' if w.narrow else ''} "
                           f"{'per-channel' if self.per_channel else 'per-tensor'}",
                "dynamic_ops": list(self.dynamic_ops), "static_ops": list(self.static_ops)}


U8 = QuantSpec("uint8", symmetric=False)
S8 = QuantSpec("int8", symmetric=False)
S8_SYM = QuantSpec("int8", symmetric=True)
W8 = QuantSpec("int8", symmetric=True)
W7 = QuantSpec("int8", symmetric=True, narrow=True)

# On x86 without VNNI, uint8 activations x 7-bit weights is MLAS's fast path; with VNNI the
# full 8-bit weights are as fast. Which is faster here is measured at compile time.
STATIC_U8S8 = QuantScheme("static_u8s8_reduced", U8, W7)
STATIC_S8S8 = QuantScheme("static_s8s8", S8, W8)
# Full 8-bit weights with uint8 activations: exact where the CPU has VNNI (the u8s8 dot product
# accumulates in int32), and 8 bits instead of 7 halve the weight rounding error (EfficientNet-Lite0
# measured here: top-1 agreement 79% with 7-bit weights). Without VNNI, MLAS's int16 pairs may
# saturate; the candidate is then measured like any other and loses on error.
STATIC_U8S8_FULL = QuantScheme("static_u8s8", U8, W8)
# Transformers: activation ranges differ per input (outliers), so they are taken at run time.
DYNAMIC_U8S8 = QuantScheme("dynamic_u8s8_reduced", U8, W7, static_ops=(), passthrough_ops=(),
                           absorbed_ops=(), dynamic_ops=("MatMul", "Gemm"), bias_int32=False)
DYNAMIC_U8S8_FULL = QuantScheme("dynamic_u8s8", U8, W8, static_ops=(), passthrough_ops=(),
                                absorbed_ops=(), dynamic_ops=("MatMul", "Gemm"), bias_int32=False)
# uint8 weights: MLAS's u8u8 kernel widens to 16 bits first, so full 8-bit weights never saturate.
DYNAMIC_U8U8 = QuantScheme("dynamic_u8u8", U8, QuantSpec("uint8", symmetric=False), static_ops=(),
                           passthrough_ops=(), absorbed_ops=(), dynamic_ops=("MatMul", "Gemm"), bias_int32=False)
# TensorRT's explicit quantization: symmetric int8 everywhere, zero point 0, Q/DQ on the inputs of
# weighted ops and on the skip input of residual Adds, nothing on outputs.
STATIC_S8S8_SYM = QuantScheme("static_s8s8_symmetric", S8_SYM, W8, absorbed_ops=(),
                              static_ops=("Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "AveragePool"),
                              passthrough_ops=(), quantize_outputs=False, residual_add_only=True, min_channels=16)

SCHEMES = {s.name: s for s in (STATIC_U8S8, STATIC_U8S8_FULL, STATIC_S8S8, DYNAMIC_U8S8, DYNAMIC_U8S8_FULL, DYNAMIC_U8U8,
                                STATIC_S8S8_SYM)}
