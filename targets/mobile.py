from types import MappingProxyType

from passes.quant_spec import STATIC_S8S8

from .profile import CLEANUP, TargetProfile

MOBILE = TargetProfile(
    name="mobile",
    description="ORT mobile: XNNPACK (Android/iOS CPU), NNAPI and CoreML execution providers",
    providers=("XnnpackExecutionProvider", "CPUExecutionProvider"),
    # NNAPI/CoreML EPs in ORT mobile builds are validated up to opset 18.
    opset_range=(9, 18),
    pipeline=CLEANUP,
    # Smallest file: never let folding materialize more than 16 KiB beyond what the inputs held.
    quant_schemes=(STATIC_S8S8,),
    quant_timed=False,
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 16 << 10})}),
)
