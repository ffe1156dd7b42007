from types import MappingProxyType

from hewn.core.runtime import ort_max_opset
from hewn.passes.quant.spec import DYNAMIC_U8S8, STATIC_S8S8, STATIC_U8S8

from hewn.targets.profile import TargetProfile

CPU = TargetProfile(
    name="cpu",
    description="ONNX Runtime CPU execution provider (MLAS kernels)",
    providers=("CPUExecutionProvider",),
    # What the installed ORT runs (ORT 1.32: up to 28); older models are upgraded (verified) to 9.
    opset_range=(9, ort_max_opset()),
    # Transformer blocks become ORT's fused CPU kernels before int8 is decided on them.
    lower=("fuse_transformer", "fuse_attention"),
    quant_schemes=(STATIC_U8S8, DYNAMIC_U8S8, STATIC_S8S8),
    quant_timed=True,
    session_options=MappingProxyType({
        "providers": "['CPUExecutionProvider']",
        "graph_optimization_level": "ORT_ENABLE_ALL (the default; int8 and fused kernels need it)",
        "intra_op_num_threads": "the physical cores the process may use (hyper-threads slow MLAS down)",
        "session.intra_op.allow_spinning": "'0' when other work shares the cores; '1' for the lowest latency",
        "execution_mode": "ORT_SEQUENTIAL (parallel mode only helps graphs with wide independent branches)",
    }),
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
