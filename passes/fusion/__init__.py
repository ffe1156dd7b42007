"""Target lowering to fused ONNX Runtime kernels: transformer fusions and attention."""
