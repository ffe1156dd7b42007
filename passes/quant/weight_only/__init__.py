"""Weight-only compression (LLMs): block-wise 4/8-bit weights for ONNX Runtime's MatMulNBits and
GatherBlockQuantized, in one folder, as NNCF keeps its weight compression:

    block_quant.py  per-block quantization, range search against a Hessian diagonal
    gptq.py         GPTQ rounding of 4-bit weights
    rewrite.py      which MatMul/Gather weights can be compressed, and the graph rewrite
    kernels.py      the measured kernel cost of each (bits, block, accuracy level) on this machine
    stats.py        calibration statistics streamed through the KV cache (Hessians, int8 errors)
    search.py       the per-layer ladders and the bisection on measured perplexity (the budget)
"""
