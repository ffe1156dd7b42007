"""Quantization: schemes (spec), streaming calibration (histogram, calibrate), deciding
(annotate) and inserting (insert_qdq) Q/DQ, the measured choice with mixed-precision fallback
(quantize, its QuantizeConfig in config, mixed_precision, diagnosis, coverage), SmoothQuant, and
the fp16 remainder (float16)."""
