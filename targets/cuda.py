from types import MappingProxyType

from hewn.passes.quant.spec import STATIC_S8S8_SYM

from hewn.targets.profile import TargetProfile

CUDA = TargetProfile(
    name="cuda",
    description="TensorRT execution provider, CUDA execution provider as fallback",
    providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    # TensorRT 10's ONNX parser covers opsets 9-20.
    opset_range=(9, 20),
    # Tensor cores take fp16 in multiples of 8 and int8 in multiples of 16.
    channel_multiple=16,
    quant_schemes=(STATIC_S8S8_SYM,),
    quant_timed=False,
    # What stays float runs in fp16 (tensor cores); LayerNorm, Softmax, reductions and the ops
    # next to Q/DQ stay fp32 (passes.float16).
    finish=("float16",),
    stated_budget=1e-3,
    session_options=MappingProxyType({
        "providers": "[('TensorrtExecutionProvider', {'trt_int8_enable': True, 'trt_fp16_enable': True, "
                     "'trt_engine_cache_enable': True}), 'CUDAExecutionProvider']",
        "trt_sparsity_enable": "True when compiled with sparsity='2:4' (Ampere or newer)",
        "io_binding": "bind inputs/outputs on the GPU (session.io_binding()) to skip host copies",
    }),
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 64 << 10})}),
)
