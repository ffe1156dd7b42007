from types import MappingProxyType

from passes.quant_spec import STATIC_S8S8_SYM

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
    quant_schemes=(STATIC_S8S8_SYM,),
    quant_timed=False,
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
