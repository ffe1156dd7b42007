"""The channel rule table: how channel indices flow through each op (STYLE.md "Pruning").

IR-neutral. A *space* is a set of axes of one tensor, `(tensor, axes)`, whose elements are the
index tuples over those axes (row-major in the listed order): a conv output's channel axis is
the space `(t, (1,))`, an attention tensor [B, H, S, D] carries heads and head dims as
`(t, (1, 3))`. Given a space known on one slot of an op, a rule returns

- links: the spaces this one is coupled to on the op's other tensors, as element pairs
  (one-to-one, many-to-one for depthwise multipliers and flattening, offsets for Concat);
- param edits: which index of which weight axis goes when a space element is removed;
- shape edits: ops whose shape-bearing input or attribute must be recomputed (Reshape targets,
  Split sizes, depthwise `group`);
- or a block: why removing these channels would change the output of the channels kept
  (LayerNorm over the axis, grouped conv, an op hewn has no rule for).

Masking is the contract: removing a group's elements must give the same outputs as zeroing the
group's elements where a *sink* (a weighted op contracting over them) reads them. Every rule
below keeps that contract or blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

Space = tuple  # (tensor name, axes tuple)


@dataclass(frozen=True)
class OpView:
    """One node, as the rules see it, whatever the IR: ONNX op type spelling for `kind`."""

    name: str                       # IR-unique name
    kind: str
    inputs: tuple                   # tensor names, None for an omitted optional input
    outputs: tuple
    attrs: dict = field(default_factory=dict, hash=False, compare=False)
    label: str = ""                 # what a user recognises: ONNX node name or module path


class GraphView(Protocol):
    def shape(self, tensor: str) -> Optional[tuple]: ...
    def const(self, tensor: str) -> Optional[np.ndarray]: ...
    def consumers(self, tensor: str) -> list: ...          # [(OpView, input index)]
    def boundary(self, tensor: str) -> Optional[str]: ...  # "graph input" / "graph output" / None
    def param_users(self, tensor: str) -> int: ...         # how many ops read a constant


class Block(Exception):
    """Raised by a rule: the channels of this space cannot be removed here, and why."""


@dataclass
class ParamEdit:
    op: str                  # OpView.name of the reader
    param: str               # constant tensor name
    axis: int                # axis of the constant indexed by the space
    space: Space
    elems: np.ndarray        # space elements ...
    index: np.ndarray        # ... and the constant's index each one removes
    role: str                # "producer" (makes the channel), "sink" (contracts it), "scale", "bias", "other"


@dataclass
class Effect:
    links: list = field(default_factory=list)        # (tensor, axes, known elems, other elems)
    edits: list = field(default_factory=list)        # ParamEdit
    shape_edits: list = field(default_factory=list)  # (op name, what)


# ---------------------------------------------------------------------------------------------
# index helpers


def size_of(shape, axes) -> int:
    return int(np.prod([shape[a] for a in axes], dtype=np.int64)) if axes else 1


def coords(shape, axes) -> np.ndarray:
    """[n, len(axes)] index tuples of the space's elements, in element order."""
    sizes = [int(shape[a]) for a in axes]
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes, dtype=np.int64))), sizes), axis=1)


def static(shape, axes=None) -> bool:
    dims = shape if axes is None else [shape[a] for a in axes]
    return shape is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)


def project(g: GraphView, src: str, axes: tuple, dst: str, axis_map: dict) -> Optional[tuple]:
    """Link a space on `src` to `dst` through an axis correspondence {src axis: dst axis}.
    Axes that `dst` broadcasts (dim 1) drop out; returns (dst axes, src elems, dst elems) or None."""
    s_shape, d_shape = g.shape(src), g.shape(dst)
    if d_shape is None:
        raise Block(f"the shape of '{dst}' is unknown")
    kept, dst_axes = [], []
    for pos, a in enumerate(axes):
        b = axis_map.get(a)
        if b is None or b < 0 or b >= len(d_shape):
            continue
        if d_shape[b] == s_shape[a]:
            kept.append(pos)
            dst_axes.append(b)
        elif d_shape[b] != 1:
            raise Block(f"'{dst}' has {d_shape[b]} where '{src}' has {s_shape[a]} channels on axis {a}")
    if not dst_axes:
        return None
    c = coords(s_shape, axes)
    dst_elems = np.ravel_multi_index(tuple(c[:, kept].T), [int(d_shape[b]) for b in dst_axes])
    return tuple(dst_axes), np.arange(len(c)), dst_elems


def space_rows(x: np.ndarray, axes: tuple) -> np.ndarray:
    """The values of `x` as [one row per space element, everything else]."""
    other = [a for a in range(x.ndim) if a not in axes]
    return np.transpose(x, list(axes) + other).reshape(int(np.prod([x.shape[a] for a in axes])), -1)


def right_aligned(src_rank: int, dst_rank: int) -> dict:
    return {a: a - src_rank + dst_rank for a in range(src_rank) if a - src_rank + dst_rank >= 0}


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def tensor_of(op: OpView, slot: tuple) -> str:
    io, i = slot
    return op.inputs[i] if io == "in" else op.outputs[i]


# ---------------------------------------------------------------------------------------------
# effect builders shared by the rules


def link_or_edit(g: GraphView, op: OpView, eff: Effect, src: str, axes: tuple, dst: str, axis_map: dict,
                 role: str = "other") -> None:
    """Couple `dst` to the known space; a constant `dst` becomes a param edit instead."""
    if dst is None:
        return
    got = project(g, src, axes, dst, axis_map)
    if got is None:
        return
    dst_axes, s, d = got
    if g.const(dst) is not None:
        if len(dst_axes) != 1:
            raise Block(f"constant '{dst}' would need slicing on several axes {dst_axes}")
        eff.edits.append(ParamEdit(op.name, dst, dst_axes[0], (src, axes), s, d, role))
    else:
        eff.links.append((dst, dst_axes, s, d))


def weight_edit(g: GraphView, op: OpView, eff: Effect, space: Space, param: Optional[str], axis: int, role: str,
                elems: Optional[np.ndarray] = None, index: Optional[np.ndarray] = None) -> None:
    if param is None:
        return
    value = g.const(param)
    if value is None:
        raise Block(f"'{op.label or op.name}' reads a computed (non-constant) {role} '{param}'")
    if g.param_users(param) > 1:
        raise Block(f"weight '{param}' is shared by {g.param_users(param)} nodes")
    n = size_of(g.shape(space[0]), space[1])
    elems = np.arange(n) if elems is None else elems
    index = elems if index is None else index
    axis = norm_axis(axis, value.ndim)
    if value.ndim == 0 or value.shape[axis] == 1 and n > 1:
        return  # a broadcast scalar/bias: nothing to slice
    if value.shape[axis] != n and index is elems:
        raise Block(f"'{param}' has {value.shape[axis]} entries on axis {axis}, the channels are {n}")
    eff.edits.append(ParamEdit(op.name, param, axis, space, elems, index, role))


def channel_axis_only(axes: tuple, axis: int, what: str) -> None:
    if axes != (axis,):
        raise Block(f"{what} carries channels on axis {axis}; this space is on axes {axes}")


# ---------------------------------------------------------------------------------------------
# rules


def rule_conv(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """Conv: W [O, I/g, k...]; group 1 = producer/sink, group == I = depthwise (in i -> out i*m..)."""
    if slot[0] == "in" and slot[1] != 0:
        raise Block("channels reach the Conv through its weights")
    x, y = op.inputs[0], op.outputs[0]
    w = g.const(op.inputs[1]) if op.inputs[1] else None
    if w is None:
        raise Block(f"Conv '{op.label}' has computed weights")
    group = int(op.attrs.get("group", 1))
    c_in, c_out = w.shape[1] * group, w.shape[0]
    channel_axis_only(axes, 1, f"Conv '{op.label}'")
    eff = Effect()
    known = (tensor_of(op, slot), axes)
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    if group == 1:
        if slot[0] == "in":
            weight_edit(g, op, eff, known, op.inputs[1], 1, "sink")
        else:
            weight_edit(g, op, eff, known, op.inputs[1], 0, "producer")
            weight_edit(g, op, eff, known, bias, 0, "bias")
        return eff
    if group == c_in and c_out % c_in == 0:
        m = c_out // c_in
        outs = np.arange(c_out)
        if slot[0] == "in":
            eff.links.append((y, (1,), outs // m, outs))
        else:
            eff.links.append((x, (1,), outs, outs // m))
        out_space = (y, (1,))
        if slot[0] == "out":
            weight_edit(g, op, eff, out_space, op.inputs[1], 0, "producer")
            weight_edit(g, op, eff, out_space, bias, 0, "bias")
        eff.shape_edits.append((op.name, "group"))
        return eff
    raise Block(f"grouped Conv '{op.label}' (group={group}) ties channels across groups; hewn prunes "
                f"group=1 and depthwise convs only")


def rule_conv_transpose(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """ConvTranspose: W [I, O/g, k...]."""
    if slot[0] == "in" and slot[1] != 0:
        raise Block("channels reach the ConvTranspose through its weights")
    w = g.const(op.inputs[1])
    if w is None:
        raise Block(f"ConvTranspose '{op.label}' has computed weights")
    channel_axis_only(axes, 1, f"ConvTranspose '{op.label}'")
    group = int(op.attrs.get("group", 1))
    known = (tensor_of(op, slot), axes)
    eff = Effect()
    if group != 1:
        raise Block(f"grouped ConvTranspose '{op.label}' (group={group}) is not pruned")
    if slot[0] == "in":
        weight_edit(g, op, eff, known, op.inputs[1], 0, "sink")
    else:
        weight_edit(g, op, eff, known, op.inputs[1], 1, "producer")
        weight_edit(g, op, eff, known, op.inputs[2] if len(op.inputs) > 2 else None, 0, "bias")
    return eff


def rule_gemm(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """Gemm Y = A·B (+C) with constant B: channels are A's columns (sink) or Y's columns (producer)."""
    if op.attrs.get("transA", 0):
        raise Block(f"Gemm '{op.label}' with transA=1 is not pruned")
    if slot != ("in", 0) and slot != ("out", 0):
        raise Block("channels reach the Gemm through B or C")
    trans_b = int(op.attrs.get("transB", 0))
    known = (tensor_of(op, slot), axes)
    eff = Effect()
    if axes == (1,):
        if slot[0] == "in":
            weight_edit(g, op, eff, known, op.inputs[1], 1 if trans_b else 0, "sink")
        else:
            weight_edit(g, op, eff, known, op.inputs[1], 0 if trans_b else 1, "producer")
            weight_edit(g, op, eff, known, op.inputs[2] if len(op.inputs) > 2 else None, -1, "bias")
        return eff
    raise Block(f"Gemm '{op.label}': channels on its row axis")


def rule_linear(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """torch Linear: W [out, in] contracts the last axis; other axes pass through."""
    if slot[0] == "in" and slot[1] != 0:
        raise Block("channels reach the Linear through its weights")
    src = tensor_of(op, slot)
    rank = len(g.shape(src))
    last = rank - 1
    eff = Effect()
    other = op.outputs[0] if slot[0] == "in" else op.inputs[0]
    if last in axes:
        if axes != (last,):
            raise Block(f"Linear '{op.label}': channels span its feature axis and others {axes}")
        if slot[0] == "in":
            weight_edit(g, op, eff, (src, axes), op.inputs[1], 1, "sink")
        else:
            weight_edit(g, op, eff, (src, axes), op.inputs[1], 0, "producer")
            weight_edit(g, op, eff, (src, axes), op.inputs[2] if len(op.inputs) > 2 else None, 0, "bias")
        return eff
    link_or_edit(g, op, eff, src, axes, other, {a: a for a in range(last)})
    return eff


def rule_matmul(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """MatMul A[..., M, K] · B[..., K, N]: constant B = a weight; two activations = attention."""
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    ra, rb, ry = (len(g.shape(t)) for t in (a, b, y))
    if min(ra, rb) < 2:
        raise Block(f"MatMul '{op.label}' with a 1-D operand")
    src = tensor_of(op, slot)
    eff = Effect()
    if g.const(b) is not None:
        if rb != 2:
            raise Block(f"MatMul '{op.label}' with a {rb}-D constant operand")
        if slot == ("in", 1):
            raise Block("channels reach the MatMul through its weights")
        last = ry - 1
        if last in axes:
            if axes != (last,):
                raise Block(f"MatMul '{op.label}': channels span its contraction axis and others {axes}")
            if slot[0] == "in":
                weight_edit(g, op, eff, (src, axes), b, 0, "sink")
            else:
                weight_edit(g, op, eff, (src, axes), b, 1, "producer")
            return eff
        other = y if slot[0] == "in" else a
        link_or_edit(g, op, eff, src, axes, other, {i: i for i in range(last)})
        return eff
    if g.const(a) is not None:
        raise Block(f"MatMul '{op.label}' with a constant left operand")
    # Two activations (Q·Kᵀ, P·V): map axes through output-rank positions.
    to_y = {"A": right_aligned(ra, ry), "B": right_aligned(rb, ry)}
    roles = {}  # output-position -> (A axis, B axis, Y axis)
    for pos in range(ry - 2):
        roles[pos] = ({v: k for k, v in to_y["A"].items()}.get(pos), {v: k for k, v in to_y["B"].items()}.get(pos), pos)
    m_a, k_a, k_b, n_b = ra - 2, ra - 1, rb - 2, rb - 1
    axis_maps = {
        ("A", "B"): {**{r[0]: r[1] for r in roles.values() if r[0] is not None and r[1] is not None}, k_a: k_b},
        ("A", "Y"): {**{r[0]: r[2] for r in roles.values() if r[0] is not None}, m_a: ry - 2},
        ("B", "Y"): {**{r[1]: r[2] for r in roles.values() if r[1] is not None}, n_b: ry - 1},
    }
    names = {"A": a, "B": b, "Y": y}
    me = {("in", 0): "A", ("in", 1): "B", ("out", 0): "Y"}[slot]
    for other in ("A", "B", "Y"):
        if other == me:
            continue
        key = (me, other) if (me, other) in axis_maps else (other, me)
        amap = axis_maps[key] if key == (me, other) else {v: k for k, v in axis_maps[key].items()}
        link_or_edit(g, op, eff, src, axes, names[other], amap)
    return eff


def rule_sdpa(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """torch scaled_dot_product_attention(q[..,L,E], k[..,S,E], v[..,S,Ev]) -> [..,L,Ev]."""
    q, k, v = op.inputs[:3]
    y = op.outputs[0]
    r = len(g.shape(q))
    batch = {i: i for i in range(r - 2)}
    maps = {
        ("q", "k"): {**batch, r - 1: r - 1}, ("q", "v"): dict(batch), ("q", "y"): {**batch, r - 2: r - 2},
        ("k", "v"): {**batch, r - 2: r - 2}, ("k", "y"): dict(batch), ("v", "y"): {**batch, r - 1: r - 1},
    }
    names = {"q": q, "k": k, "v": v, "y": y}
    slots = {("in", 0): "q", ("in", 1): "k", ("in", 2): "v", ("out", 0): "y"}
    if slot not in slots:
        raise Block("channels reach attention through its mask")
    if len(op.inputs) > 3 and op.inputs[3] is not None:
        mask = g.shape(op.inputs[3])
        batch_axes = [a for a in axes if a < r - 2]  # only batch/head axes meet the mask
        if any(mask[len(mask) - r + a] != 1 for a in batch_axes if len(mask) - r + a >= 0):
            raise Block("the attention mask varies along the pruned axis")
    me, eff, src = slots[slot], Effect(), tensor_of(op, slot)
    for other in ("q", "k", "v", "y"):
        if other != me:
            amap = maps.get((me, other)) or {b: a for a, b in maps[(other, me)].items()}
            link_or_edit(g, op, eff, src, axes, names[other], amap)
    return eff


def rule_elementwise(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """Add/Mul/... with numpy broadcasting: every operand and the output share the channels."""
    src = tensor_of(op, slot)
    rank = len(g.shape(src))
    eff = Effect()
    for t in list(op.inputs) + list(op.outputs):
        if t is None or t == src:
            continue
        shape = g.shape(t)
        if shape is None:
            raise Block(f"the shape of '{t}' is unknown")
        role = "bias" if op.kind in ("Add", "Sub") else "scale" if op.kind in ("Mul", "PRelu") else "other"
        link_or_edit(g, op, eff, src, axes, t, right_aligned(rank, len(shape)), role)
    return eff


def rule_unary(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """Relu, Cast, Clip, Dropout, ...: input 0 and output 0 (and Dropout's mask) share the channels."""
    if slot[0] == "in" and slot[1] != 0:
        raise Block(f"channels reach {op.kind} through a parameter input")
    src = tensor_of(op, slot)
    eff = Effect()
    rank = len(g.shape(src))
    for t in (op.inputs[0], *[o for o in op.outputs if o]):
        if t != src and (t == op.inputs[0] or g.consumers(t) or g.boundary(t)):  # unused masks don't matter
            link_or_edit(g, op, eff, src, axes, t, {a: a for a in range(rank)})
    return eff


def rule_batchnorm(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    if slot not in (("in", 0), ("out", 0)):
        raise Block("channels reach BatchNormalization through its statistics")
    if len([o for o in op.outputs if o]) > 1:
        raise Block(f"BatchNormalization '{op.label}' in training mode")
    eff = rule_unary(op, g, slot, axes)
    if 1 in axes:
        channel_axis_only(axes, 1, f"BatchNormalization '{op.label}'")
        src = tensor_of(op, slot)
        for i, role in zip(range(1, 5), ("scale", "bias", "other", "other")):
            if i < len(op.inputs):
                weight_edit(g, op, eff, (src, axes), op.inputs[i], 0, role)
    return eff


def rule_layernorm(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    if slot not in (("in", 0), ("out", 0)):
        raise Block("channels reach LayerNormalization through its scale")
    rank = len(g.shape(tensor_of(op, slot)))
    first = norm_axis(int(op.attrs.get("axis", -1)), rank)
    if any(a >= first for a in axes):
        raise Block(f"LayerNormalization '{op.label}' normalizes over this axis: removing channels would "
                    f"change the mean and variance of the channels kept")
    return rule_unary(op, g, slot, axes)


def axis_blocking(kind_axes: Callable[[OpView, int], Sequence[int]], why: str):
    """A rule for ops that are channel-preserving except along some axes (Softmax axis, pooled axes)."""

    def rule(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
        src = tensor_of(op, slot)
        rank = len(g.shape(src))
        bad = set(kind_axes(op, rank)) & set(axes)
        if bad:
            raise Block(f"{op.kind} '{op.label}' {why} (axis {sorted(bad)})")
        return rule_unary(op, g, slot, axes)

    return rule


def _softmax_axes(op, rank):
    axis = norm_axis(int(op.attrs.get("axis", -1 if op.attrs.get("_opset", 13) >= 13 else 1)), rank)
    return range(axis, rank) if op.attrs.get("_opset", 13) < 13 else [axis]


def rule_pool(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    if len([o for o in op.outputs if o]) > 1:
        raise Block(f"{op.kind} '{op.label}' returns indices")
    src = tensor_of(op, slot)
    if 1 not in axes:
        raise Block(f"{op.kind} '{op.label}' pools the axis the channels are on")
    # Spatial axes in the space (a Flatten seen from behind) drop out: every (c, h, w) links to c,
    # so the groups stay whole channels.
    eff = Effect()
    other = op.outputs[0] if slot[0] == "in" else op.inputs[0]
    link_or_edit(g, op, eff, src, axes, other, {0: 0, 1: 1})
    return eff


def _whole_and_parts(op: OpView, g: GraphView, slot: tuple, axes: tuple, whole: str, parts, axis: int,
                     src_is_whole: bool) -> Effect:
    """Concat (parts -> whole) and Split (whole -> parts): part k's channel i is the whole's
    channel offset_k + i; along other axes every tensor shares the channels."""
    rank = len(g.shape(whole))
    src = tensor_of(op, slot)
    eff = Effect()
    if axis not in axes:
        for t in [whole, *parts]:
            if t != src:
                link_or_edit(g, op, eff, src, axes, t, {a: a for a in range(rank)})
        return eff
    if axes != (axis,):
        raise Block(f"{op.kind} '{op.label}' works on axis {axis}, which the channels span with others {axes}")
    offset = 0
    for t in parts:
        n = int(g.shape(t)[axis])
        if src_is_whole:
            eff.links.append((t, (axis,), np.arange(offset, offset + n), np.arange(n)))
        elif t == src:
            eff.links.append((whole, (axis,), np.arange(n), np.arange(offset, offset + n)))
        offset += n
    return eff


def rule_concat(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    y = op.outputs[0]
    axis = norm_axis(int(op.attrs.get("axis", 1)), len(g.shape(y)))
    if axes == (axis,) and any(g.const(t) is not None for t in op.inputs):
        raise Block(f"Concat '{op.label}' joins a constant on the channel axis")
    return _whole_and_parts(op, g, slot, axes, y, op.inputs, axis, src_is_whole=slot[0] == "out")


def rule_split(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    x = op.inputs[0]
    axis = norm_axis(int(op.attrs.get("axis", 0)), len(g.shape(x)))
    eff = _whole_and_parts(op, g, slot, axes, x, op.outputs, axis, src_is_whole=slot[0] == "in")
    if axis in axes:
        eff.shape_edits.append((op.name, "split"))
    return eff


def rule_transpose(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    src = tensor_of(op, slot)
    rank = len(g.shape(src))
    perm = list(op.attrs.get("perm") or reversed(range(rank)))
    fwd = {p: i for i, p in enumerate(perm)}  # input axis -> output axis
    eff = Effect()
    if slot[0] == "in":
        link_or_edit(g, op, eff, src, axes, op.outputs[0], fwd)
    else:
        link_or_edit(g, op, eff, src, axes, op.inputs[0], {i: p for i, p in enumerate(perm)})
    return eff


def _is_int(d) -> bool:
    return isinstance(d, (int, np.integer))


def reshape_segments(xs, ys) -> Optional[list]:
    """Pair up runs of axes with equal products, row-major: [( x axes, y axes ), ...].
    (1,128,384) -> (1,128,12,32) gives ([0],[0]), ([1],[1]), ([2],[2,3]). None when unaligned."""
    segs, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        if not _is_int(xs[i]) or not _is_int(ys[j]):
            if xs[i] != ys[j]:
                return None
            segs.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ax, ay, px, py = [i], [j], int(xs[i]), int(ys[j])
        i, j = i + 1, j + 1
        while px != py:
            if px < py:
                if i >= len(xs) or not _is_int(xs[i]):
                    return None
                px, i = px * int(xs[i]), i + 1
                ax.append(i - 1)
            else:
                if j >= len(ys) or not _is_int(ys[j]):
                    return None
                py, j = py * int(ys[j]), j + 1
                ay.append(j - 1)
        segs.append((ax, ay))
    for k in range(i, len(xs)):
        if xs[k] != 1:
            return None
        segs.append(([k], []))
    for k in range(j, len(ys)):
        if ys[k] != 1:
            return None
        segs.append(([], [k]))
    return segs


def reshape_pairs(x_shape, x_axes: tuple, y_shape) -> tuple:
    """Row-major reshape: the y axes that hold the channels of `x_axes`, and the element pairs.
    Axes the reshape keeps (batch, sequence) stay out of the space."""
    if x_shape is None or y_shape is None:
        raise Block("reshape with unknown shapes on the channel path")
    segs = reshape_segments(list(x_shape), list(y_shape))
    if segs is None:
        raise Block(f"reshape {tuple(x_shape)} -> {tuple(y_shape)} does not keep the channels in whole blocks")
    touched = [(ax, ay) for ax, ay in segs if set(ax) & set(x_axes)]
    y_axes = [a for _, ay in touched for a in ay]
    if not y_axes:
        raise Block("reshape drops the channel axis")
    sizes_y = [int(y_shape[a]) for a in y_axes]
    flat = np.arange(int(np.prod(sizes_y, dtype=np.int64)))
    y_coords = np.stack(np.unravel_index(flat, sizes_y), axis=1)
    x_coord = {}
    pos = 0
    for ax, ay in touched:
        seg_flat = np.ravel_multi_index(tuple(y_coords[:, pos:pos + len(ay)].T), [int(y_shape[a]) for a in ay])
        pos += len(ay)
        for a, c in zip(ax, np.unravel_index(seg_flat, [int(x_shape[a]) for a in ax])):
            x_coord[a] = c
    x_elems = np.ravel_multi_index(tuple(x_coord[a] for a in x_axes), [int(x_shape[a]) for a in x_axes])
    return tuple(y_axes), x_elems, flat


def rule_reshape(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    if slot[0] == "in" and slot[1] != 0:
        raise Block("channels reach Reshape through its shape input")
    x, y = op.inputs[0], op.outputs[0]
    src = tensor_of(op, slot)
    other = y if slot[0] == "in" else x
    other_axes, mine, theirs = reshape_pairs(g.shape(src), axes, g.shape(other))
    eff = Effect()
    eff.links.append((other, other_axes, mine, theirs))
    eff.shape_edits.append((op.name, "reshape"))
    return eff


def rule_flatten(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    eff = rule_reshape(op, g, slot, axes)
    eff.shape_edits.clear()  # Flatten recomputes its shape itself
    return eff


def rule_squeeze(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    eff = rule_reshape(op, g, slot, axes)
    eff.shape_edits.clear()
    return eff


def rule_resize(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    if slot not in (("in", 0), ("out", 0)):
        raise Block("channels reach Resize through roi/scales/sizes")
    x_shape, y_shape = g.shape(op.inputs[0]), g.shape(op.outputs[0])
    if any(x_shape[a] != y_shape[a] for a in axes):
        raise Block(f"{op.kind} '{op.label}' resizes the channel axis")
    eff = rule_unary(op, g, slot, axes)
    if len(op.inputs) > 3 and op.inputs[3]:
        eff.shape_edits.append((op.name, "resize_sizes"))
    return eff


def rule_pad(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    if slot not in (("in", 0), ("out", 0)):
        raise Block("channels reach Pad through its pads")
    pads = op.attrs.get("pads")
    if pads is None and len(op.inputs) > 1 and op.inputs[1]:
        pads = g.const(op.inputs[1])
    if pads is None:
        raise Block(f"Pad '{op.label}' with computed pads")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    rank = len(pads) // 2
    if any(pads[a] or pads[a + rank] for a in axes):
        raise Block(f"Pad '{op.label}' pads the channel axis")
    return rule_unary(op, g, slot, axes)


def rule_shape(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    """Shape reads dims; fine while no reader picks a channel dim out of it."""
    for consumer, _ in g.consumers(op.outputs[0]):
        if not any(g.consumers(o) for o in consumer.outputs if o):
            continue  # e.g. the unused `_` of `b, s, _ = x.shape`
        picked = consumer.attrs.get("_picks")  # set by the adapters: which dims a Gather/getitem reads
        if picked is None or set(picked) & set(axes):
            raise Block(f"the channel count of '{tensor_of(op, slot)}' is read as a value by '{consumer.label}'")
    return Effect()


def rule_reduce(op: OpView, g: GraphView, slot: tuple, axes: tuple) -> Effect:
    src = tensor_of(op, slot)
    x_rank = len(g.shape(op.inputs[0]))
    red = op.attrs.get("_axes")
    red = list(range(x_rank)) if red is None else [norm_axis(int(a), x_rank) for a in red]
    keep = int(op.attrs.get("keepdims", 1))
    if slot[0] == "in":
        if set(red) & set(axes):
            raise Block(f"{op.kind} '{op.label}' reduces over the channel axis")
        amap = {a: (a if keep else a - sum(r < a for r in red)) for a in range(x_rank) if a not in red}
    else:
        amap = {(a if keep else a - sum(r < a for r in red)): a for a in range(x_rank) if a not in red}
    eff = Effect()
    other = op.outputs[0] if slot[0] == "in" else op.inputs[0]
    link_or_edit(g, op, eff, src, axes, other, amap)
    return eff


UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
         "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor",
         "Ceil", "Round", "Sign", "Cast", "Identity", "Dropout", "Clip", "Mish", "ThresholdedRelu", "Sin", "Cos",
         "Not", "IsNaN", "IsInf", "Contiguous")
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "Equal",
               "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift")

RULES: dict[str, Callable[..., Effect]] = {
    "Conv": rule_conv,
    "ConvTranspose": rule_conv_transpose,
    "Gemm": rule_gemm,
    "MatMul": rule_matmul,
    "Linear": rule_linear,
    "ScaledDotProductAttention": rule_sdpa,
    "BatchNormalization": rule_batchnorm,
    "InstanceNormalization": rule_batchnorm,  # per-channel statistics and affine, like BN
    "LayerNormalization": rule_layernorm,
    "Softmax": axis_blocking(_softmax_axes, "normalizes over the channels"),
    "LogSoftmax": axis_blocking(_softmax_axes, "normalizes over the channels"),
    "LpNormalization": axis_blocking(lambda op, r: [norm_axis(int(op.attrs.get("axis", -1)), r)],
                                     "normalizes over the channels"),
    "LRN": axis_blocking(lambda op, r: [1], "mixes neighbouring channels"),
    "GroupNormalization": axis_blocking(lambda op, r: [1], "normalizes groups of channels together"),
    "MaxPool": rule_pool, "AveragePool": rule_pool, "GlobalAveragePool": rule_pool, "GlobalMaxPool": rule_pool,
    "LpPool": rule_pool, "GlobalLpPool": rule_pool,
    "Concat": rule_concat,
    "Split": rule_split,
    "Transpose": rule_transpose,
    "Reshape": rule_reshape,
    "Flatten": rule_flatten,
    "Squeeze": rule_squeeze,
    "Unsqueeze": rule_squeeze,
    "Resize": rule_resize,
    "Upsample": rule_resize,
    "Pad": rule_pad,
    "Shape": rule_shape,
    "ReduceMean": rule_reduce, "ReduceSum": rule_reduce, "ReduceMax": rule_reduce, "ReduceMin": rule_reduce,
    "ReduceL2": rule_reduce, "ReduceL1": rule_reduce, "ReduceProd": rule_reduce, "ReduceSumSquare": rule_reduce,
    **{k: rule_unary for k in UNARY},
    **{k: rule_elementwise for k in ELEMENTWISE},
}

# Ops that create a prunable channel space on output 0: (kind, axis of the output, as a function of rank).
PRODUCERS: dict[str, Callable[[int], int]] = {
    "Conv": lambda r: 1,
    "ConvTranspose": lambda r: 1,
    "Gemm": lambda r: 1,
    "MatMul": lambda r: r - 1,     # only with a constant B (checked by the analysis)
    "Linear": lambda r: r - 1,
}
