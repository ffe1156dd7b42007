"""How a compiled model's outputs are judged against the original's.

`compare` is the lossless check (to a tolerance). `output_error` measures a lossy change with what
fits each output's dtype: floats by cosine and relative L2 error, integers (class ids, indices) by
exact-match rate, bools by flip rate. A NaN or Inf where the original has a finite value is a
failure everywhere (error = inf); a NaN where the original also has one is equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float  # max over outputs of max|a - r| / max|r|: error relative to the tensor's scale
    passed: bool

    def as_dict(self) -> dict:
        return {"max_abs_err": self.max_abs, "max_rel_err": self.max_rel, "passed": self.passed}


def same_nonfinite(ref: np.ndarray, act: np.ndarray) -> bool:
    """Where the reference is not finite, the other is the same value (NaN equals NaN)."""
    bad = ~np.isfinite(ref)
    if not np.array_equal(bad, ~np.isfinite(act)):
        return False
    r, a = ref[bad], act[bad]
    return bool(np.all((r == a) | (np.isnan(r) & np.isnan(a))))


def compare(reference: Sequence[Sequence[np.ndarray]], actual: Sequence[Sequence[np.ndarray]],
            *, rtol: float, atol: float) -> Comparison:
    """Each output tensor passes when max|a - r| <= atol + rtol * max|r|.

    The error is judged against the tensor's scale, not element by element: float32
    reassociation (a folded BN, a pre-transposed weight) leaves errors proportional to the
    magnitudes summed, which on a near-zero element of a large-valued tensor is far above
    rtol * |r| although the rewrite is exact. A wrong rewrite errs at the tensor's scale.
    Non-finite values must be the same (NaN equals NaN); integer outputs must be equal.
    """
    max_abs = max_rel = 0.0
    passed = True
    for ref_outs, act_outs in zip(reference, actual, strict=True):
        for ref, act in zip(ref_outs, act_outs, strict=True):
            ref, act = np.asarray(ref), np.asarray(act)
            if ref.shape != act.shape:
                return Comparison(float("inf"), float("inf"), False)
            if ref.size == 0:
                continue
            if not np.issubdtype(ref.dtype, np.floating):
                if not np.array_equal(ref, act):
                    return Comparison(float("inf"), float("inf"), False)
                continue
            ref64, act64 = ref.astype(np.float64), act.astype(np.float64)
            if not same_nonfinite(ref64, act64):
                return Comparison(float("inf"), float("inf"), False)
            finite = np.isfinite(ref64)
            if not finite.any():
                continue
            err = float(np.abs(act64[finite] - ref64[finite]).max())
            scale = float(np.abs(ref64[finite]).max())
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, err / scale if scale > 0 else (0.0 if err == 0 else float("inf")))
            passed &= err <= atol + rtol * scale
    return Comparison(max_abs, max_rel, passed)


class _Output:
    """Running figures for one output over all samples."""

    def __init__(self, index: int, dtype, scores: bool = False):
        self.index = index
        self.scores = scores         # class scores: top-1 agreement judges it too
        self.kind = "bool" if dtype == np.bool_ else "float" if np.issubdtype(dtype, np.floating) else "integer"
        self.cosines: list[float] = []
        self.diff2 = self.ref2 = 0.0
        self.max_abs = self.max_rel = 0.0
        self.same = self.total = 0
        self.nonfinite = 0           # NaN/Inf where the reference is finite
        self.agree = self.rows = 0   # top-1 agreement of [batch, classes] logits
        self.channel_diff2: Optional[np.ndarray] = None   # per channel (axis 1) of rank >= 3 outputs
        self.channel_ref2: Optional[np.ndarray] = None

    def add(self, ref: np.ndarray, act: np.ndarray) -> None:
        if self.kind != "float":
            self.same += int((ref == act).sum())
            self.total += ref.size
            return
        ref, act = ref.astype(np.float64), act.astype(np.float64)
        finite, act_finite = np.isfinite(ref), np.isfinite(act)
        same = (ref == act) | (np.isnan(ref) & np.isnan(act))
        # NaN/Inf where the reference is finite, or a different value where the reference has one
        self.nonfinite += int((finite & ~act_finite).sum() + (~finite & ~same).sum())
        both = finite & act_finite
        a, b = ref[both], act[both]
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        scale = float(np.abs(a).max()) if a.size else 0.0
        self.max_abs = max(self.max_abs, diff)
        self.max_rel = max(self.max_rel, diff / scale if scale > 0 else diff)
        self.diff2 += float(((a - b) ** 2).sum())
        self.ref2 += float((a ** 2).sum())
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        self.cosines.append(float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)))
        if self.scores and ref.ndim == 2 and ref.shape[1] > 1 and both.all() and not _unit_rows(ref):
            self.agree += int((ref.argmax(1) == act.argmax(1)).sum())
            self.rows += ref.shape[0]
        if ref.ndim >= 3 and both.all():
            self._channels(ref, act)

    def _channels(self, ref: np.ndarray, act: np.ndarray) -> None:
        """Per channel of axis 1 (a detector's [1, 4 + classes, anchors], feature maps, tokens):
        a whole-tensor cosine hides a channel that int8 wiped out next to one with large values."""
        axes = tuple(i for i in range(ref.ndim) if i != 1)
        diff2, ref2 = ((ref - act) ** 2).sum(axes), (ref ** 2).sum(axes)
        if self.channel_diff2 is None or self.channel_diff2.shape != diff2.shape:
            self.channel_diff2, self.channel_ref2 = diff2, ref2
        else:
            self.channel_diff2, self.channel_ref2 = self.channel_diff2 + diff2, self.channel_ref2 + ref2

    def worst_channel(self) -> Optional[float]:
        """The largest relative L2 error of a channel that carries signal: an RMS at least 1/1000 of
        the mean channel's (an all-but-zero channel's relative error is noise). Not 1/1000 of the
        energy: YOLOv8's 0..1 score channels carry ~1e-5 of the energy of its pixel-box channels,
        and those are the channels int8 wipes out."""
        if self.channel_diff2 is None or self.channel_ref2.size < 2:
            return None
        signal = self.channel_ref2 > 1e-6 * float(self.channel_ref2.mean())
        if not signal.any():
            return None
        return float(np.sqrt(self.channel_diff2[signal] / self.channel_ref2[signal]).max())

    def figures(self) -> dict:
        out: dict = {"output": self.index, "kind": self.kind}
        if self.kind != "float":
            rate = self.same / self.total if self.total else 1.0
            key, error = ("exact_match", 1.0 - rate) if self.kind == "integer" else ("flip_rate", 1.0 - rate)
            out[key] = rate if self.kind == "integer" else 1.0 - rate
            out["error"] = error
            return out
        cosine = float(np.mean(self.cosines)) if self.cosines else 1.0
        rel_l2 = (self.diff2 / self.ref2) ** 0.5 if self.ref2 > 0 else (0.0 if self.diff2 == 0 else float("inf"))
        out.update({"cosine": cosine, "rel_l2_err": rel_l2, "max_abs_err": self.max_abs, "max_rel_err": self.max_rel})
        if self.rows:
            out["top1_agreement"] = self.agree / self.rows
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        # 1 - cosine, and the same quantity for a change of scale: for noise orthogonal to the
        # output both read |noise|^2 / (2 |output|^2); a clipped or rescaled output shows only in the second
        out["error"] = float("inf") if self.nonfinite else max(0.0, 1.0 - cosine, 0.5 * rel_l2 ** 2)
        worst = self.worst_channel()
        if worst is not None:
            out["worst_channel_rel_err"] = worst
            if worst > WIPED_OUT:  # a channel more than half lost fails any budget, whatever the rest does
                out["error"] = max(out["error"], 0.5 * worst ** 2)
        return out


WIPED_OUT = 0.5


def output_error(reference: Sequence[Sequence[np.ndarray]], actual: Sequence[Sequence[np.ndarray]],
                 classes: Collection[int] = ()) -> dict:
    """How far a lossy model's outputs are from the original's. `outputs`: the figures of each
    output; `error`: the largest output error (what budgets are checked against); `mean_cosine`,
    `max_abs_err`, `max_rel_err` over the float outputs; `top1_agreement` over the outputs in
    `classes` (indices of [batch, classes] score outputs: hewn.passes.analysis.output_roles; the
    argmax of an embedding or a feature means nothing); `exact_match` (lowest
    over integer outputs), `flip_rate` (highest over bool outputs); `nonfinite`: how many NaN/Inf
    the model produced where the original has finite values."""
    per: list[_Output] = []
    for ref_outs, act_outs in zip(reference, actual, strict=True):
        for i, (ref, act) in enumerate(zip(ref_outs, act_outs, strict=True)):
            ref, act = np.asarray(ref), np.asarray(act)
            if ref.shape != act.shape:
                return {"shape_mismatch": True, "error": float("inf"), "mean_cosine": 0.0}
            if len(per) <= i:
                per.append(_Output(i, ref.dtype, i in classes))
            per[i].add(ref, act)
    figures = [p.figures() for p in per]
    floats = [f for f in figures if f["kind"] == "float"]
    out = {"error": max([f["error"] for f in figures], default=0.0),
           "mean_cosine": float(np.mean([f["cosine"] for f in floats])) if floats else 1.0,
           "max_abs_err": max([f["max_abs_err"] for f in floats], default=0.0),
           "max_rel_err": max([f["max_rel_err"] for f in floats], default=0.0)}
    rows = sum(p.rows for p in per)
    if rows:
        out["top1_agreement"] = sum(p.agree for p in per) / rows
    integers = [f["exact_match"] for f in figures if f["kind"] == "integer"]
    if integers:
        out["exact_match"] = min(integers)
    bools = [f["flip_rate"] for f in figures if f["kind"] == "bool"]
    if bools:
        out["flip_rate"] = max(bools)
    nonfinite = sum(f.get("nonfinite", 0) for f in figures)
    if nonfinite:
        out["nonfinite"] = nonfinite
    out["outputs"] = figures
    return out


def _unit_rows(x: np.ndarray) -> bool:
    """L2-normalized rows are embeddings (sentence encoders), not logits: their argmax means nothing."""
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3))
