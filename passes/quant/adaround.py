"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"):
learn, layer by layer, whether each int8 weight rounds up or down, instead of to nearest.

    stats = adaround(float_model, quantized_graph, calib_feeds)

For each Conv / Gemm / MatMul whose weight is a constant integer tensor behind a DequantizeLinear,
in graph order: the layer's input is taken as the *quantized* graph computes it (earlier layers'
learned rounding and activation quantization included; AdaRound's "asymmetric" reconstruction,
as AIMET and BRECQ run it), its target output from the float model. The rounding is learned in
torch on CPU with the scale fixed (hewn's), then written as a new integer initializer; the
int32 bias (scale s_x * s_w) stays valid and is left alone. Memory is bounded by sampling output
positions (rows) instead of keeping whole activations.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hewn.core.errors import ConfigError, HewnError
from hewn.core.graph_utils import const_value
from hewn.core.ir import to_model
from hewn.core.runtime import make_session, run
from hewn.passes.quant.bias_correction import _dequantized

ZETA, GAMMA = 1.1, -0.1          # the rectified sigmoid's stretch (the paper's values)
REG = 0.01                       # lambda: rounding regulariser weight (paper, AIMET default)
BETA = (20.0, 2.0)               # annealed with a cosine after the warm-up (AIMET)
WARMUP = 0.2                     # share of iterations with reconstruction loss only
# The paper and AIMET run 10k iterations at Adam's 1e-3; at 500, 1e-2 moves V as far. Measured on
# EfficientNet-Lite0 (64 calibration crops, 200 held-out): 500 at 1e-2 gave logits MSE 0.0062,
# 500 at 1e-3 0.0082, 2000 at 1e-2 0.0069 (it fits the calibration crops better and the others worse).
ITERS, LR = 500, 1e-2
ROWS = 4096                      # output positions (conv) or rows (gemm) sampled per layer
MAX_ELEMENTS = 2 ** 24           # floats one layer's sampled inputs may hold (64 MB)
TARGET_BYTES = 2 ** 28           # float targets gathered per float-model pass (256 MB)
RUN_BATCH = 8                    # samples per ORT run when the model's batch dim is free
INT_GRIDS = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


@dataclass
class _Layer:
    """One weighted node: where its input and target come from, its weight in (G, O/G, K) layout."""
    node: gs.Node
    dq: gs.Node
    target: str                  # the node's output in the float model
    w: np.ndarray                # float weight / scale + zero point, arranged
    scale: np.ndarray            # arranged like w
    zero: np.ndarray
    q: np.ndarray                # the graph's current integer weight, arranged
    grid: tuple[int, int]        # the integer range the rounding may use
    bias: Optional[np.ndarray]   # as the quantized graph adds it (dequantized), or None
    shape: tuple                 # the weight's own shape, and whether arranging transposed it
    transposed: bool = False
    alpha: float = 1.0
    conv: Optional[dict] = None  # strides, pads, dilations, kernel, group: for Conv
    clamp: Optional[tuple] = None   # the Relu/Clip after the layer, reconstructed through (the paper's f_a)
    rows: list = field(default_factory=list)   # per run batch: sampled flat output positions
    positions: int = 0                         # a conv's output positions per sample (a check)
    y: Optional[np.ndarray] = None             # float targets at those positions (rows, C_out)


def adaround(float_model: onnx.ModelProto, quantized: gs.Graph, feeds: Sequence[dict], nodes=None,
             iters: int = ITERS, time_limit_s: float = 600.0, lr: float = LR, batch: int = 256,
             rows: int = ROWS, reg: float = REG, seed: int = 0, threads: int = 1, target: str = "float",
             ir_version: Optional[int] = None) -> dict:
    """Learn the rounding of each quantized Conv/Gemm/MatMul weight in `quantized` (edited in place,
    in topological order; replaced arrays go at its next cleanup()) on calibration `feeds` (ORT feed
    dicts) against `float_model`, the graph before quantization (same node and tensor names, as
    InsertQDQ keeps them). `nodes`: node names to limit it to.

    Returns stats: "done"; per layer "layers" (reconstruction MSE with the graph's rounding and the
    learned one, the target's mean square, weights flipped, seconds); "skipped" and "not_reached"
    (the time limit) with the reason; "seconds". target="float" reconstructs the float model's
    output (asymmetric: the rounding also makes up for the input's quantization error);
    "quantized_input" the float weight on the quantized input (the weight's own error only).
    threads: torch's while learning (its tensors are small; two threads measured 5x slower than
    one on a busy 2-core machine)."""
    if target not in ("float", "quantized_input"):
        raise ConfigError(f"adaround: target is 'float' or 'quantized_input', got {target!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        learning = {"iters": iters, "lr": lr, "batch": batch, "reg": reg, "symmetric": target == "quantized_input"}
        return _adaround(float_model, quantized, list(feeds), nodes, learning, time_limit_s, rows, seed,
                         ir_version or max(float_model.ir_version, 7))
    finally:
        torch.set_num_threads(before)


def _adaround(float_model, quantized, feeds, nodes, learning: dict, time_limit_s, rows, seed, ir) -> dict:
    import torch

    start = time.perf_counter()
    batches = _batches(feeds, [gs.import_onnx(float_model).inputs, quantized.inputs])
    layers, skipped = _layers(float_model, quantized, nodes)
    stats = {"done": 0, "layers": [], "skipped": skipped, "not_reached": [], "iters": learning["iters"],
             "samples": sum(_count(b) for b in batches), "rows": rows}
    torch.manual_seed(seed)
    pending = list(layers)
    while pending:
        if time.perf_counter() - start > time_limit_s:
            stats["not_reached"] = [{"node": layer.node.name, "why": f"time limit {time_limit_s:g} s reached"}
                                    for layer in pending]
            break
        chunk = _chunk(pending, rows)
        _float_targets(float_model, chunk, batches, rows, seed, ir)
        for layer in chunk:
            if time.perf_counter() - start > time_limit_s:
                break
            stats["layers"].append(_round_layer(layer, quantized, batches, learning, ir))
            stats["done"] += 1
            layer.y, layer.rows = None, []   # free the targets before the next layer's
            pending.remove(layer)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return stats


def _round_layer(layer: _Layer, quantized: gs.Graph, batches, learning: dict, ir) -> dict:
    begin = time.perf_counter()
    x = _quantized_inputs(layer, quantized, batches, ir)
    gathered = time.perf_counter() - begin
    if learning["symmetric"]:
        layer.y = _output(layer, x, layer.w)
    learned = _learn(layer, x, learning["iters"], learning["lr"], learning["batch"], learning["reg"])
    before, after = _mse(layer, x, layer.q), _mse(layer, x, learned)
    row = {"node": layer.node.name, "op": layer.node.op, "rows": int(x.shape[1]),
           "target_power": float(f"{np.mean(np.square(layer.y)):.4g}"), "mse_nearest": before, "mse_adaround": after}
    if after < before:   # a layer AdaRound made worse keeps the rounding it had
        _write(layer, learned)
        row["flipped"] = int(np.count_nonzero(learned != layer.q))
    else:
        row["kept"] = "nearest: learned rounding reconstructed worse"
    row["seconds"] = round(time.perf_counter() - begin, 2)
    row["input_seconds"] = round(gathered, 2)
    return row


# -- which layers, and their weights -------------------------------------------------------------

def _layers(float_model, quantized: gs.Graph, nodes) -> tuple[list[_Layer], list[dict]]:
    float_nodes = {n.name: n for n in gs.import_onnx(float_model).nodes}
    wanted = None if nodes is None else set(nodes)
    layers, skipped = [], []
    for node in quantized.nodes:   # graph order: a layer's input reflects every layer before it
        if node.op not in ("Conv", "Gemm", "MatMul") or (wanted is not None and node.name not in wanted):
            continue
        layer = _layer(node, float_nodes.get(node.name))
        if isinstance(layer, str):
            skipped.append({"node": node.name, "op": node.op, "why": layer})
        else:
            layers.append(layer)
    return layers, skipped


def _layer(node: gs.Node, twin: Optional[gs.Node]):
    """A _Layer, or why the node is left as it is."""
    dq = node.inputs[1].inputs[0] if len(node.inputs) > 1 and node.inputs[1].inputs else None
    if dq is None or dq.op != "DequantizeLinear":
        return "its weight is not an integer tensor behind a DequantizeLinear"
    values = [const_value(t) if t.name else None for t in dq.inputs[:3]]
    if values[0] is None or values[1] is None or values[0].dtype not in INT_GRIDS:
        return "its weight is not a constant int8/uint8 initializer"
    if len(dq.outputs[0].outputs) > 1 or len(dq.inputs[0].outputs) > 1:
        return "its quantized weight is shared with other nodes"
    if twin is None or len(twin.inputs) < 2 or const_value(twin.inputs[1]) is None:
        return "the float model has no node of that name with a constant weight"
    w = const_value(twin.inputs[1]).astype(np.float32)
    if w.shape != values[0].shape:
        return f"float weight shape {w.shape} differs from the quantized one {values[0].shape}"
    geometry = _geometry(node, w)
    if isinstance(geometry, str):
        return geometry
    arrange, conv, alpha = geometry
    bias = _bias(node)
    channels = w.shape[0] if node.op == "Conv" or node.attrs.get("transB", 0) else w.shape[1]
    if isinstance(bias, str) or (bias is not None and bias.size not in (1, channels)):
        return bias if isinstance(bias, str) else f"its bias has {bias.size} values for {channels} outputs"
    scale, zero = _broadcast(values[1], dq, w), _broadcast(values[2] if values[2] is not None else 0, dq, w)
    q = values[0]
    grid = (int(q.min()), int(q.max()))   # never outside the range the scheme's own rounding used
    if grid[0] == grid[1]:
        return "all its integer weights are equal: nothing to round"
    transposed = node.op == "MatMul" or (node.op == "Gemm" and not node.attrs.get("transB", 0))
    target, clamp = _through_activation(node, twin)
    return _Layer(node, dq, target, arrange(w / scale + zero), arrange(scale), arrange(zero),
                  arrange(q.astype(np.float32)), grid, bias, w.shape, transposed, alpha, conv, clamp)


def _through_activation(node: gs.Node, twin: gs.Node) -> tuple[str, Optional[tuple]]:
    """(the float tensor to reconstruct, the clamp that produces it): the Relu/Clip output when
    that is the layer's only reader in both graphs (errors the activation cuts off do not count),
    else the layer's own output."""
    readers = [t.outputs for t in (node.outputs[0], twin.outputs[0])]
    if not all(len(r) == 1 and r[0].op in ("Relu", "Clip") for r in readers) or readers[0][0].op != readers[1][0].op:
        return twin.outputs[0].name, None
    act = readers[1][0]
    if act.op == "Relu":
        return act.outputs[0].name, (0.0, math.inf)
    bounds = []
    for i, key, default in ((1, "min", -math.inf), (2, "max", math.inf)):
        given = len(act.inputs) > i and act.inputs[i].name
        value = const_value(act.inputs[i]) if given else act.attrs.get(key, default)
        if value is None or np.size(value) != 1:
            return twin.outputs[0].name, None
        bounds.append(float(np.asarray(value).reshape(-1)[0]))
    return act.outputs[0].name, tuple(bounds)


def _geometry(node: gs.Node, w: np.ndarray):
    """(how to arrange a weight-shaped array as (G, O/G, K), conv parameters, alpha), or why not."""
    if node.op == "Conv":
        conv = _conv(node, w)
        if isinstance(conv, str):
            return conv
        g = conv["group"]
        return (lambda a: a.reshape(g, w.shape[0] // g, -1)), conv, 1.0
    if node.op == "Gemm":
        if node.attrs.get("transA", 0):
            return "Gemm with transA is not handled"
        trans = bool(node.attrs.get("transB", 0))
        return (lambda a: (a if trans else a.T)[None]), None, float(node.attrs.get("alpha", 1.0))
    if w.ndim != 2:
        return "MatMul with a weight of more than 2 dimensions is not handled"
    return (lambda a: a.T[None]), None, 1.0


def _conv(node: gs.Node, w: np.ndarray):
    """Conv attributes in 2-D form (a 1-D conv is a 2-D one of height 1), or why not."""
    if w.ndim not in (3, 4):
        return f"{w.ndim - 2}-D Conv is not handled (1-D and 2-D are)"
    k = list(w.shape[2:])
    extra = 4 - w.ndim   # 1-D: prepend a unit height
    attr = lambda name, default: [default] * extra + list(node.attrs.get(name, [default] * len(k)))  # noqa: E731
    pads = list(node.attrs.get("pads", [0] * 2 * len(k)))
    begin, end = pads[:len(k)], pads[len(k):]
    return {"kernel": [1] * extra + k, "strides": attr("strides", 1), "dilations": attr("dilations", 1),
            "pads": [0] * extra + begin + [0] * extra + end, "auto_pad": node.attrs.get("auto_pad", "NOTSET"),
            "group": int(node.attrs.get("group", 1)), "ndim": len(k)}


def _broadcast(values, dq: gs.Node, w: np.ndarray) -> np.ndarray:
    """A per-channel (axis) or per-tensor DequantizeLinear parameter at the weight's full shape."""
    values = np.asarray(values, np.float32)
    if values.ndim == 1 and w.ndim > 1:
        shape = [1] * w.ndim
        shape[int(dq.attrs.get("axis", 1)) % w.ndim] = -1
        values = values.reshape(shape)
    return np.broadcast_to(values, w.shape).astype(np.float32)


def _bias(node: gs.Node):
    """The bias as the quantized graph adds it (a constant, or an int32 one dequantized), None
    without one, or why it cannot be read."""
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return None
    tensor = node.inputs[2]
    value = const_value(tensor)
    if value is None and tensor.inputs and tensor.inputs[0].op == "DequantizeLinear":
        value = _dequantized(tensor.inputs[0])
    if value is None:
        return "its bias is not a constant"
    if node.op == "Gemm":
        value = value * float(node.attrs.get("beta", 1.0))
    return np.asarray(value, np.float32).reshape(-1)


# -- data: float targets and quantized inputs at sampled positions --------------------------------

def _cap(layer: _Layer, rows: int) -> int:
    """Rows for this layer: `rows`, fewer when its sampled inputs or targets would pass MAX_ELEMENTS."""
    g, o, k = layer.w.shape
    return max(1, min(rows, MAX_ELEMENTS // (g * k), MAX_ELEMENTS // (g * o)))


def _chunk(pending: list[_Layer], rows: int) -> list[_Layer]:
    """The next layers whose float targets fit in TARGET_BYTES together (one float-model pass)."""
    total, out = 0, []
    for layer in pending:
        size = _cap(layer, rows) * layer.w.shape[0] * layer.w.shape[1] * 4
        if out and total + size > TARGET_BYTES:
            break
        out.append(layer)
        total += size
    return out


def _batches(feeds: list[dict], inputs_of_each: list) -> list[dict]:
    """Feeds concatenated RUN_BATCH at a time where every graph's inputs have a free first dim
    (both models then see the same batches); else one by one."""
    free = all(not isinstance((t.shape or [1])[0], int) for inputs in inputs_of_each for t in inputs)
    same = all(f.keys() == feeds[0].keys() and all(np.shape(f[k]) == np.shape(feeds[0][k]) for k in f)
               for f in feeds)
    if not (free and same):
        return feeds
    return [{k: np.concatenate([f[k] for f in feeds[i:i + RUN_BATCH]]) for k in feeds[0]}
            for i in range(0, len(feeds), RUN_BATCH)]


def _count(feed: dict) -> int:
    return len(next(iter(feed.values())))


def _session(graph: gs.Graph, names: list[str], ir: int):
    """A session on `graph` cut down to what computes `names` (graph outputs from now on)."""
    graph = graph.copy()
    tensors = graph.tensors()
    graph.outputs = [tensors[n] for n in names]
    for t in graph.outputs:
        t.dtype = t.dtype or np.float32
    graph.cleanup()
    return make_session(to_model(graph, ir_version=ir), optimize=False)


def _float_targets(float_model, chunk: list[_Layer], batches, rows: int, seed: int, ir: int) -> None:
    """Each layer's float output at positions drawn per run batch (stored on the layer)."""
    names = [layer.target for layer in chunk]
    session = _session(gs.import_onnx(float_model), names, ir)
    rng = np.random.default_rng(seed)
    samples = sum(_count(b) for b in batches)
    targets: list[list] = [[] for _ in chunk]
    for feed in batches:
        for layer, y, out in zip(chunk, run(session, names, feed), targets):
            flat = _rows(layer, y)
            want = min(flat.shape[0], math.ceil(_cap(layer, rows) * _count(feed) / samples))
            picked = np.sort(rng.choice(flat.shape[0], want, replace=False))
            layer.rows.append(picked)
            out.append(np.asarray(flat[picked], np.float32))
    for layer, out in zip(chunk, targets):
        layer.y = np.concatenate(out)


def _rows(layer: _Layer, y: np.ndarray) -> np.ndarray:
    """An output as (positions, channels): a view for Gemm/MatMul, an index-ready one for Conv."""
    if layer.conv is None:
        return y.reshape(-1, y.shape[-1])
    layer.positions = int(np.prod(y.shape[2:]))
    return _Positions(y.reshape(y.shape[0], y.shape[1], -1))


class _Positions:
    """A conv output (B, C, S) indexed by flat position b * S + s without a transposed copy."""

    def __init__(self, y: np.ndarray):
        self.y, self.shape = y, (y.shape[0] * y.shape[2], y.shape[1])

    def __getitem__(self, index):
        b, s = np.divmod(index, self.y.shape[2])
        return self.y[b, :, s]


def _quantized_inputs(layer: _Layer, quantized: gs.Graph, batches, ir: int) -> np.ndarray:
    """The layer's input as the quantized graph computes it now, at the sampled rows: (G, rows, K)."""
    name = layer.node.inputs[0].name
    session = None if name in batches[0] else _session(quantized, [name], ir)
    parts = []
    for feed, picked in zip(batches, layer.rows):
        x = feed[name] if session is None else run(session, [name], feed)[0]
        parts.append(_patches(layer, np.asarray(x, np.float32), picked))
    return np.ascontiguousarray(np.concatenate(parts).transpose(1, 0, 2))


def _patches(layer: _Layer, x: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """What the layer multiplies with its weight for each picked output row: (rows, G, K)."""
    if layer.conv is None:
        return x.reshape(-1, x.shape[-1])[picked][:, None, :]
    c = layer.conv
    x = x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1])       # 1-D: height 1
    pads = _pads(c, x.shape[2:])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    (kh, kw), (sh, sw), (dh, dw) = c["kernel"], c["strides"], c["dilations"]
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    if ho * wo != layer.positions:
        raise HewnError(f"adaround: Conv '{layer.node.name}' read as {ho}x{wo} output positions, but the float "
                        f"model's output has {layer.positions}; its attributes {dict(layer.node.attrs)} are not "
                        f"handled (exclude it with nodes=...)")
    b, s = np.divmod(picked, ho * wo)
    oh, ow = np.divmod(s, wo)
    r = (oh * sh)[:, None] + np.arange(kh) * dh                   # (rows, kh)
    q = (ow * sw)[:, None] + np.arange(kw) * dw                   # (rows, kw)
    patch = xp[b[:, None, None], :, r[:, :, None], q[:, None, :]]  # (rows, kh, kw, C)
    g = c["group"]
    return patch.transpose(0, 3, 1, 2).reshape(len(picked), g, -1)


def _pads(c: dict, size) -> list[int]:
    """(top, left, bottom, right) padding, auto_pad resolved for this input size."""
    if c["auto_pad"] == "VALID":
        return [0, 0, 0, 0]
    if c["auto_pad"] not in ("SAME_UPPER", "SAME_LOWER"):
        return c["pads"]
    begin, end = [], []
    for n, k, s, d in zip(size, c["kernel"], c["strides"], c["dilations"]):
        total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(small if c["auto_pad"] == "SAME_UPPER" else large)
        end.append(large if c["auto_pad"] == "SAME_UPPER" else small)
    return begin + end


# -- learning the rounding ------------------------------------------------------------------------

def _rectified(v):
    import torch
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _forward(layer: _Layer, x, weight, bias):
    """The layer on (G, rows, K) inputs: (rows, C_out)."""
    import torch
    out = torch.bmm(x, weight.transpose(1, 2))                    # (G, rows, O/G)
    out = out.permute(1, 0, 2).reshape(x.shape[1], -1) * layer.alpha
    out = out if bias is None else out + bias
    return out if layer.clamp is None else torch.clamp(out, *layer.clamp)


def _learn(layer: _Layer, x: np.ndarray, iters: int, lr: float, batch: int, reg: float) -> np.ndarray:
    """The learned integer weight (arranged): base + [h(V) >= 0.5], h the rectified sigmoid, V from
    reconstruction loss + reg * sum(1 - |2h - 1|^beta), beta annealed after the warm-up."""
    import torch
    perm = torch.randperm(x.shape[1])
    xs, ys = torch.from_numpy(x)[:, perm].contiguous(), torch.from_numpy(layer.y)[perm].contiguous()
    w = torch.from_numpy(layer.w)
    lo, hi = layer.grid
    base = torch.clamp(torch.floor(w), lo, hi - 1)   # base + h stays in the grid: no clamp per step
    frac = torch.clamp(w - base, 0, 1)
    v = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1))   # h(V) = frac: starts at W
    scale = torch.from_numpy(layer.scale)
    offset = scale * (base - torch.from_numpy(layer.zero))
    bias = None if layer.bias is None else torch.from_numpy(layer.bias)
    opt = torch.optim.Adam([v], lr=lr, fused=True)
    rows, warm = xs.shape[1], int(WARMUP * iters)
    for i in range(iters):
        start = (i * batch) % rows if rows > batch else 0
        h = _rectified(v)
        out = _forward(layer, xs[:, start:start + batch], torch.addcmul(offset, scale, h), bias)
        loss = (out - ys[start:start + batch]).pow(2).sum(1).mean()
        if i >= warm:   # 1 - |2h - 1|^beta summed, less its constant part
            beta = BETA[1] + 0.5 * (BETA[0] - BETA[1]) * (1 + math.cos(math.pi * (i - warm) / max(1, iters - warm)))
            loss = loss - reg * (2 * h - 1).abs().pow(beta).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (base + (_rectified(v) >= 0.5).float()).numpy()


def _output(layer: _Layer, x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The layer's output on all sampled rows with integer (or float, on the grid's scale) weight q."""
    import torch
    with torch.no_grad():
        weight = torch.from_numpy(layer.scale) * (torch.from_numpy(q) - torch.from_numpy(layer.zero))
        bias = None if layer.bias is None else torch.from_numpy(layer.bias)
        return np.concatenate([_forward(layer, torch.from_numpy(x[:, i:i + 4096]), weight, bias).numpy()
                               for i in range(0, x.shape[1], 4096)])


def _mse(layer: _Layer, x: np.ndarray, q: np.ndarray) -> float:
    """Mean squared error of the layer's output with integer weight `q` against the target."""
    return float(f"{np.mean(np.square(_output(layer, x, q) - layer.y)):.4g}")


def _write(layer: _Layer, learned: np.ndarray) -> None:
    """The learned integers as a new initializer of the DequantizeLinear (the old array untouched)."""
    q = learned[0].T if layer.transposed else learned.reshape(layer.shape)
    dtype = np.asarray(layer.dq.inputs[0].values).dtype
    layer.dq.inputs[0] = gs.Constant(f"adaround/{layer.node.name}/weight", np.ascontiguousarray(q).astype(dtype))
