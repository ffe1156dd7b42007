from types import MappingProxyType

from passes.quant_spec import DYNAMIC_U8S8, STATIC_S8S8, STATIC_U8S8

from .profile import CLEANUP, TargetProfile

CPU = TargetProfile(
    name="cpu",
    description="ONNX Runtime CPU execution provider (MLAS kernels)",
    providers=("CPUExecutionProvider",),
    opset_range=(9, 21),
    pipeline=CLEANUP,
    quant_schemes=(STATIC_U8S8, DYNAMIC_U8S8, STATIC_S8S8),
    quant_timed=True,
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
