"""Analyses over an ONNX graph: shapes and dtypes (ShapeInfo), MACs/params/bytes (CostModel and
the one MAC model in macs.py), and the target's op allow-list check (CheckOpSupport)."""
