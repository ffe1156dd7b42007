from types import MappingProxyType

from hewn.core.runtime import ort_max_opset
from hewn.passes.quant.spec import DYNAMIC_U8S8, DYNAMIC_U8S8_FULL, STATIC_S8S8, STATIC_U8S8, STATIC_U8S8_FULL

from hewn.targets.profile import TargetProfile

def has_vnni() -> bool:
    """Whether this CPU has an int8 dot product (AVX-VNNI, AVX512-VNNI or AMX): then MLAS's u8s8
    kernels accumulate in int32 and full 8-bit weights cost nothing over ORT's 7-bit reduce_range
    (which exists for AVX2 without VNNI, where int16 pair sums can saturate)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


CPU = TargetProfile(
    name="cpu",
    description="ONNX Runtime CPU execution provider (MLAS kernels)",
    providers=("CPUExecutionProvider",),
    # What the installed ORT runs (ORT 1.32: up to 28); older models are upgraded (verified) to 9.
    opset_range=(9, ort_max_opset()),
    # Transformer blocks become ORT's fused CPU kernels before int8 is decided on them.
    lower=("fuse_transformer", "fuse_attention"),
    quant_schemes=(STATIC_U8S8_FULL if has_vnni() else STATIC_U8S8, DYNAMIC_U8S8_FULL if has_vnni() else DYNAMIC_U8S8,
                   STATIC_S8S8),
    quant_timed=True,
    # Causal LMs: constant reshape targets, then attention over the KV cache, rotary embeddings and the
    # tanh GELU as ORT's opset-20/23 kernels; then MatMulNBits / GatherBlockQuantized weights.
    decoder=("constant_reshape_targets", "fuse_cached_attention", "fuse_rotary", "fuse_gelu_tanh"),
    decoder_weights=True,
    session_options=MappingProxyType({
        "providers": "['CPUExecutionProvider']",
        "graph_optimization_level": "ORT_ENABLE_ALL (the default; int8 and fused kernels need it)",
        "intra_op_num_threads": "the physical cores the process may use (hyper-threads slow MLAS down)",
        "session.intra_op.allow_spinning": "'0' when other work shares the cores; '1' for the lowest latency",
        "execution_mode": "ORT_SEQUENTIAL (parallel mode only helps graphs with wide independent branches)",
    }),
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
