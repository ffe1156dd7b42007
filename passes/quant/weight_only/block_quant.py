"""Block-wise asymmetric integer quantization of weight matrices, in the layouts ONNX Runtime's
MatMulNBits and GatherBlockQuantized read.

A weight is quantized along its input dimension K in blocks of `block` values:
w ~ scale * (q - zero), q and zero unsigned `bits`-bit integers, one scale and zero per block.
Zero points are integers on purpose: MatMulNBits with float zero points falls back to a
dequantize path measured 50-100x slower here, and 8-bit does not take them at all.

Ranges are not plain min/max: each block's (scale, zero) is searched over shrunken ranges with
a least-squares refit of the scale, minimizing the error weighted by how large each input
channel's activations are on calibration data (`importance`, the diagonal of X^T X: the
imatrix/AWQ idea).

Rows are processed in chunks, so the largest temporary is bounded whatever the matrix size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHRINK = (1.0, 0.97, 0.94, 0.9, 0.85, 0.8, 0.75, 0.7)  # candidate fractions of the min/max range (4-bit)
CHUNK_VALUES = 1 << 22                                   # values per row chunk (16 MB of float32)


@dataclass
class Blocks:
    """A [N, K] weight (rows = output channels) quantized in blocks along K."""
    q: np.ndarray       # [N, K // block, block] uint8, unpacked
    scale: np.ndarray   # [N, K // block] float32
    zero: np.ndarray    # [N, K // block] uint8
    bits: int
    block: int

    def dequantize(self) -> np.ndarray:
        return self.rows(0, self.q.shape[0])

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows a..b dequantized, [b - a, K]."""
        q, zero, scale = self.q[a:b], self.zero[a:b], self.scale[a:b]
        return ((q.astype(np.float32) - zero[..., None]) * scale[..., None]).reshape(len(q), -1)

    def packed(self) -> np.ndarray:
        """MatMulNBits' B: [N, blocks, block * bits / 8], two 4-bit values a byte, low nibble first."""
        return pack(self.q, self.bits)

    def packed_zero(self) -> np.ndarray:
        """MatMulNBits' zero points: [N * ceil(blocks * bits / 8)], 4-bit ones packed per row."""
        z = self.zero
        if self.bits == 4:
            if z.shape[1] % 2:
                z = np.concatenate([z, np.zeros((z.shape[0], 1), np.uint8)], axis=1)
            z = z[:, 0::2] | (z[:, 1::2] << 4)
        return np.ascontiguousarray(z, dtype=np.uint8).reshape(-1)

    @property
    def nbytes(self) -> int:
        return self.q.size * self.bits // 8 + self.scale.size * 4 + self.packed_zero().size


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return np.ascontiguousarray(q, dtype=np.uint8)
    return np.ascontiguousarray(q[..., 0::2] | (q[..., 1::2] << 4), dtype=np.uint8)


def quantize(weight_nk: np.ndarray, bits: int, block: int, importance: np.ndarray | None = None,
             search: bool = True) -> tuple[Blocks, float]:
    """Quantize `weight_nk [N, K]` (K divisible by `block`): (the blocks, the importance-weighted
    relative squared error sum(imp * (w - w_q)^2) / sum(imp * w^2))."""
    n, k = weight_nk.shape
    if k % block:
        raise ValueError(f"K={k} is not a multiple of the block size {block}")
    nb = k // block
    imp = np.ones(k, np.float32) if importance is None else np.maximum(importance.astype(np.float32), 1e-12)
    imp_b = imp.reshape(nb, block)
    q = np.empty((n, nb, block), np.uint8)
    scale = np.empty((n, nb), np.float32)
    zero = np.empty((n, nb), np.uint8)
    err = ref = 0.0
    rows = max(1, CHUNK_VALUES // k)
    for start in range(0, n, rows):
        w = np.asarray(weight_nk[start:start + rows], np.float32).reshape(-1, nb, block)
        qc, sc, zc = _search(w, imp_b, bits, SHRINK if (search and bits < 8) else (1.0,))
        q[start:start + rows], scale[start:start + rows], zero[start:start + rows] = qc, sc, zc
        deq = (qc.astype(np.float32) - zc[..., None]) * sc[..., None]
        err += float((imp_b * (w - deq) ** 2).sum())
        ref += float((imp_b * w ** 2).sum())
    return Blocks(q, scale, zero, bits, block), err / max(ref, 1e-30)


def _search(w: np.ndarray, imp: np.ndarray, bits: int, shrink) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block, the (q, scale, zero) of lowest weighted error over the shrunken ranges."""
    qmax = (1 << bits) - 1
    lo0 = np.minimum(w.min(-1), 0.0)
    hi0 = np.maximum(w.max(-1), 0.0)
    best = None
    for f in shrink:
        lo, hi = lo0 * f, hi0 * f
        s = np.where(hi > lo, (hi - lo) / qmax, 1.0).astype(np.float32)
        z = np.clip(np.round(-lo / s), 0, qmax)
        q = np.clip(np.round(w / s[..., None]) + z[..., None], 0, qmax)
        # least-squares scale for these integers: sum(imp w c) / sum(imp c^2), c = q - z
        c = q - z[..., None]
        num, den = (imp * w * c).sum(-1), (imp * c * c).sum(-1)
        s2 = np.where(den > 0, num / np.maximum(den, 1e-30), s).astype(np.float32)
        s2 = np.where(s2 > 0, s2, s)
        q = np.clip(np.round(w / s2[..., None]) + z[..., None], 0, qmax)
        e = (imp * (w - (q - z[..., None]) * s2[..., None]) ** 2).sum(-1)
        if best is None:
            best = [q, s2, z, e]
            continue
        better = e < best[3]
        best[0] = np.where(better[..., None], q, best[0])
        best[1] = np.where(better, s2, best[1])
        best[2] = np.where(better, z, best[2])
        best[3] = np.minimum(e, best[3])
    return best[0].astype(np.uint8), best[1].astype(np.float32), best[2].astype(np.uint8)


__all__ = ["Blocks", "quantize", "pack"]
