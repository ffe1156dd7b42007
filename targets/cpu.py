from types import MappingProxyType

from .profile import CLEANUP, TargetProfile

CPU = TargetProfile(
    name="cpu",
    description="ONNX Runtime CPU execution provider (MLAS kernels)",
    providers=("CPUExecutionProvider",),
    opset_range=(9, 21),
    pipeline=CLEANUP,
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
