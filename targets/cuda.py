from types import MappingProxyType

from .profile import CLEANUP, TargetProfile

CUDA = TargetProfile(
    name="cuda",
    description="TensorRT execution provider, CUDA execution provider as fallback",
    providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    # TensorRT 10's ONNX parser covers opsets 9-20.
    opset_range=(9, 20),
    pipeline=CLEANUP,
    # Tensor cores take fp16 in multiples of 8 and int8 in multiples of 16.
    channel_multiple=16,
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
