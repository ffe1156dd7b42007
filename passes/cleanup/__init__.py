"""Lossless cleanup: constant folding, identity and dead-node removal, BatchNorm folding,
redundant pair folding, and fixing dynamic input shapes (StaticShapes)."""
