"""Frontends: an ONNX file or ModelProto (from_onnx), a torch.nn.Module (from_torch)."""
