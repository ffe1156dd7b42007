"""metric="boxes": a detector judged by its boxes (issue 27). The compiled model's boxes after NMS
against the original's, matched per class at IoU >= 0.5; the score is their F1 over all samples.

Reads YOLOv8-style outputs [1, 4 + classes, anchors]: centre x, centre y, width, height, then one
score per class (already sigmoid-ed). Another layout is not guessed: metric= then takes a function
(reference_outputs, outputs) -> score.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

CONF = 0.25
NMS_IOU = 0.45
MATCH_IOU = 0.5


def yolo_layout(shape: Sequence) -> Optional[str]:
    """Why `shape` is not [1, 4 + classes, anchors] with anchors > 4 + classes, or None when it is."""
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        return f"an output of shape {list(shape)}"
    if shape[1] < 5 or shape[2] <= shape[1]:
        return f"shape {list(shape)} (not [batch, 4 + classes, anchors])"
    return None


def boxes(output: np.ndarray, conf: float = CONF) -> list[tuple]:
    """[(class, x1, y1, x2, y2)] of the first image after per-class NMS, most confident first."""
    pred = np.asarray(output, np.float64)[0].T
    scores = pred[:, 4:]
    cls, best = scores.argmax(1), scores.max(1)
    keep = np.flatnonzero(best > conf)
    keep = keep[np.argsort(-best[keep], kind="stable")]
    out: list[tuple] = []
    for i in keep:
        cx, cy, w, h = pred[i, :4]
        box = (int(cls[i]), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if all(b[0] != box[0] or iou(b, box) < NMS_IOU for b in out):
            out.append(box)
    return out


def iou(a: tuple, b: tuple) -> float:
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    h = max(0.0, min(a[4], b[4]) - max(a[2], b[2]))
    inter = w * h
    union = (a[3] - a[1]) * (a[4] - a[2]) + (b[3] - b[1]) * (b[4] - b[2]) - inter
    return inter / union if union > 0 else 0.0


def matched(ref: list, out: list) -> int:
    """Greedy one-to-one matches of the same class at IoU >= MATCH_IOU."""
    used, count = set(), 0
    for r in ref:
        best = max(((i, iou(r, o)) for i, o in enumerate(out) if i not in used and o[0] == r[0]),
                   key=lambda t: t[1], default=(None, 0.0))
        if best[0] is not None and best[1] >= MATCH_IOU:
            used.add(best[0])
            count += 1
    return count


def box_f1(reference: list, actual: list, output: int = 0) -> float:
    """F1 of the boxes of `actual` against those of `reference` (per sample: lists of outputs)."""
    tp = fp = fn = 0
    for ref_outs, act_outs in zip(reference, actual, strict=True):
        a, b = boxes(ref_outs[output]), boxes(act_outs[output])
        m = matched(a, b)
        tp, fp, fn = tp + m, fp + len(b) - m, fn + len(a) - m
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


__all__ = ["box_f1", "boxes", "iou", "matched", "yolo_layout"]
