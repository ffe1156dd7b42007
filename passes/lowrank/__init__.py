"""Low-rank (SVD) splitting: shared maths and SVDConfig (factor), the ONNX pass (svd_split) and
the torch.fx side (fx_svd)."""
