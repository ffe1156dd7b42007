from types import MappingProxyType

from hewn.passes.quant.spec import STATIC_S8S8

from hewn.targets.profile import TargetProfile

# ORT's mobile package operator set (tools/ci_build/github/android/mobile_package.required_operators.config,
# what NNAPI/CoreML/XNNPACK builds are validated on) plus the fused ops ORT's optimizers emit for it.
MOBILE_OPS = frozenset("""
Abs Add And ArgMax ArgMin AveragePool Cast Ceil Clip Concat ConstantOfShape Conv ConvTranspose Cos CumSum
DepthToSpace DequantizeLinear Div DynamicQuantizeLinear Elu Equal Erf Exp Expand Flatten Floor Gather GatherND
Gemm GlobalAveragePool Greater GreaterOrEqual Identity If InstanceNormalization LRN LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop MatMul MatMulInteger Max MaxPool Mean Min Mul Neg NonMaxSuppression NonZero
Not Or PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear Range Reciprocal ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum Relu Reshape Resize ReverseSequence Round Scan ScatterND Shape Sigmoid Sin Size Slice Softmax
SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh ThresholdedRelu Tile TopK Transpose Unique Unsqueeze Where
com.microsoft:BiasGelu com.microsoft:DynamicQuantizeMatMul com.microsoft:FusedConv com.microsoft:FusedGemm
com.microsoft:FusedMatMul com.microsoft:Gelu com.microsoft:MatMulIntegerToFloat com.microsoft:QLinearAdd
com.microsoft:QLinearAveragePool com.microsoft:QLinearConv com.microsoft:QLinearGlobalAveragePool
com.microsoft:QLinearMul com.microsoft:QLinearSigmoid com.microsoft:SkipLayerNormalization
""".split())

MOBILE = TargetProfile(
    name="mobile",
    description="ORT mobile: XNNPACK (Android/iOS CPU), NNAPI and CoreML execution providers",
    providers=("XnnpackExecutionProvider", "CPUExecutionProvider"),
    # NNAPI/CoreML EPs in ORT mobile builds are validated up to opset 18.
    opset_range=(9, 18),
    # Fixed input shapes first: the cleanup then folds the shape arithmetic of dynamic exports.
    prepare=("static_shapes",),
    dynamic_inputs=False,
    finish=("check_op_support",),
    allowed_ops=MOBILE_OPS,
    # Smallest file: never let folding materialize more than 16 KiB beyond what the inputs held.
    quant_schemes=(STATIC_S8S8,),
    quant_timed=False,
    session_options=MappingProxyType({
        "providers": "['XnnpackExecutionProvider', 'CPUExecutionProvider'] (Android/iOS), or NNAPI / CoreML",
        "intra_op_num_threads": "the big cores of the device (XNNPACK runs its own thread pool)",
        "model format": "save with output='model.ort' for ORT Mobile's minimal build",
    }),
    pass_configs=MappingProxyType({"fold_constants": MappingProxyType({"max_growth_bytes": 16 << 10})}),
)
