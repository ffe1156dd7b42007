"""GPTQ (Frantar et al. 2022): block-wise weight quantization that rounds one input column at a
time and pushes each column's rounding error onto the columns not yet rounded, weighted by the
inverse Hessian of the layer's output error, H = X^T X over calibration activations. The result
minimizes ||X W^T - X Q^T|| far better than rounding to nearest at 4 bits.

Groups (the MatMulNBits blocks) take their scale and zero point from the weights as they stand
when the group is reached (already error-compensated), searched like block_quant's ranges.
Columns are processed in blocks of COLUMNS with one matrix update per block (the lazy batch
update of the paper); rows in chunks, so memory stays bounded for a 262k-row lm_head.
"""
from __future__ import annotations

import numpy as np

from hewn.passes.quant.weight_only.block_quant import SHRINK, Blocks, _search

COLUMNS = 128
DAMP = 0.01
ROW_CHUNK = 1 << 15


def inverse_hessian_factor(h: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of H^-1 (dampened), as GPTQ uses it."""
    h = h.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += DAMP * np.mean(np.diag(h)) * np.eye(len(h))
    inv = np.linalg.inv(h)
    inv = (inv + inv.T) / 2
    return np.linalg.cholesky(inv).T.astype(np.float32)  # upper: inv = U^T U


def gptq(weight_nk: np.ndarray, hessian: np.ndarray, bits: int, block: int) -> tuple[Blocks, float]:
    """Quantize `weight_nk [N, K]` with `hessian [K, K]` (X^T X): (the blocks, the relative output
    error tr(E H E^T) / tr(W H W^T) with E = W - dequantized)."""
    n, k = weight_nk.shape
    if k % block or COLUMNS % block:
        raise ValueError(f"K={k} and {COLUMNS} must be multiples of the block {block}")
    u = inverse_hessian_factor(hessian)
    nb = k // block
    q = np.empty((n, nb, block), np.uint8)
    scale = np.empty((n, nb), np.float32)
    zero = np.empty((n, nb), np.uint8)
    blocks = Blocks(q, scale, zero, bits, block)  # filled in place below
    h32 = hessian.astype(np.float32)
    err = ref = 0.0
    for r0 in range(0, n, ROW_CHUNK):
        w = np.array(weight_nk[r0:r0 + ROW_CHUNK], np.float32)
        original = w.copy()
        rows = slice(r0, r0 + len(w))
        for c0 in range(0, k, COLUMNS):
            c1 = min(c0 + COLUMNS, k)
            w1, errs = w[:, c0:c1], np.zeros((len(w), c1 - c0), np.float32)
            u1 = u[c0:c1, c0:c1]
            for i in range(c1 - c0):
                col = c0 + i
                if col % block == 0:  # a new group: its range from the weights as they stand now
                    g = col // block
                    qg, sg, zg = _search(w1[:, i:i + block].reshape(len(w), 1, block), np.ones((1, block), np.float32),
                                         bits, SHRINK if bits < 8 else (1.0,))
                    scale[rows, g], zero[rows, g] = sg[:, 0], zg[:, 0]
                s, z = scale[rows, col // block], zero[rows, col // block].astype(np.float32)
                qc = np.clip(np.round(w1[:, i] / s) + z, 0, (1 << bits) - 1)
                q[rows, col // block, col % block] = qc
                e = (w1[:, i] - (qc - z) * s) / u1[i, i]
                w1[:, i:] -= np.outer(e, u1[i, i:])
                errs[:, i] = e
            w[:, c1:] -= errs @ u[c0:c1, c1:]
        err += _quadratic(original - blocks.rows(r0, r0 + len(w)), h32)
        ref += _quadratic(original, h32)
    return blocks, err / max(ref, 1e-30)


def output_error(weight_nk: np.ndarray, blocks: Blocks, hessian: np.ndarray) -> float:
    """tr(E H E^T) / tr(W H W^T): the relative squared error of the layer's outputs on calibration data."""
    h = hessian.astype(np.float32)
    err = ref = 0.0
    for r0 in range(0, weight_nk.shape[0], ROW_CHUNK):
        w = np.asarray(weight_nk[r0:r0 + ROW_CHUNK], np.float32)
        d = w - blocks.rows(r0, r0 + len(w))
        err += _quadratic(d, h)
        ref += _quadratic(w, h)
    return err / max(ref, 1e-30)


def _quadratic(d: np.ndarray, h: np.ndarray) -> float:
    """sum_i d_i H d_i^T, through one matrix product (a three-operand einsum is a slow loop)."""
    return float(((d @ h) * d).sum(dtype=np.float64))


__all__ = ["gptq", "output_error", "inverse_hessian_factor"]
