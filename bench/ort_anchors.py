"""ONNX Runtime's own quantizers as the benches run them (one definition for bench and bench.real)."""
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
