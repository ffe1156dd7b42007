"""The ONNX side of channel pruning: the graph adapter the rules read, and the surgeon that
removes a decided set of groups from an onnx-graphsurgeon Graph (initializers, Reshape
targets, Split sizes, depthwise `group`)."""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from compiler.errors import PassError

from .channel_groups import ChannelAnalysis, analyze
from .channel_rules import OpView, coords
from .graph_utils import const_value
from .shape_inference import ShapeInfo

_INPUT_ATTRS = {  # opset >= 13 moved these attributes to inputs: (op, input index) -> attr name
    ("ReduceSum", 1): "axes", ("ReduceMean", 1): "axes", ("ReduceMax", 1): "axes", ("ReduceMin", 1): "axes",
    ("ReduceL2", 1): "axes", ("ReduceL1", 1): "axes", ("ReduceProd", 1): "axes", ("ReduceSumSquare", 1): "axes",
}


class OnnxView:
    """GraphView over a gs.Graph (rules see OpViews; tensor names are the ONNX names)."""

    def __init__(self, graph: gs.Graph, shapes: ShapeInfo, opset: int):
        self.graph = graph
        self.shapes = shapes
        self.opset = opset
        self.tensors = graph.tensors()
        self._ops: dict[int, OpView] = {}
        self._by_name: dict[str, gs.Node] = {}
        outputs = {t.name for t in graph.outputs}
        inputs = {t.name for t in graph.inputs}
        self._boundary = {**{n: "graph input" for n in inputs}, **{n: "graph output" for n in outputs}}
        for i, node in enumerate(graph.nodes):
            self._view(node, i)

    def _view(self, node: gs.Node, i: int) -> OpView:
        if id(node) in self._ops:
            return self._ops[id(node)]
        name = node.name or f"{node.op}_{i}"
        attrs = {k: v for k, v in node.attrs.items() if not isinstance(v, (gs.Graph, gs.Constant))}
        attrs["_opset"] = self.opset
        if node.op.startswith("Reduce") and "axes" not in attrs and len(node.inputs) > 1:
            axes = const_value(node.inputs[1])
            attrs["_axes"] = None if axes is None else [int(a) for a in axes.ravel()]
        elif node.op.startswith("Reduce"):
            attrs["_axes"] = attrs.get("axes")
        if node.op == "Split" and "split" not in attrs and len(node.inputs) > 1:
            pass  # sizes come from the output shapes; the surgeon rewrites the input
        if node.op in ("Gather", "Slice"):
            attrs["_picks"] = self._picks(node)
        if node.op == "Squeeze" or node.op == "Unsqueeze":
            pass
        view = OpView(name, node.op, tuple(t.name if t.name else None for t in node.inputs),
                      tuple(t.name if t.name else None for t in node.outputs), attrs, node.name or name)
        self._ops[id(node)] = view
        self._by_name[name] = node
        return view

    def _picks(self, node: gs.Node) -> Optional[list]:
        """Which dims of a Shape output a Gather/Slice reads (None when not a constant pick)."""
        if node.op == "Gather":
            idx = const_value(node.inputs[1])
            return None if idx is None else [int(i) for i in np.asarray(idx).ravel()]
        vals = [const_value(t) for t in node.inputs[1:4]]
        if any(v is None for v in vals[:2]):
            return None
        rank = self.shapes.shape(node.inputs[0].name)
        n = rank[0] if rank and isinstance(rank[0], int) else 8
        starts, ends = int(vals[0].ravel()[0]), int(vals[1].ravel()[0])
        return list(range(n))[slice(starts, ends)]

    # -- the GraphView protocol ----------------------------------------------------------------

    def ops(self) -> list[OpView]:
        return [self._view(n, i) for i, n in enumerate(self.graph.nodes)]

    def node(self, name: str) -> gs.Node:
        return self._by_name[name]

    def shape(self, tensor: str):
        t = self.tensors.get(tensor)
        if t is not None and isinstance(t, gs.Constant):
            return tuple(t.shape)
        value = self.const(tensor)
        if value is not None:
            return tuple(value.shape)
        return self.shapes.shape(tensor)

    def const(self, tensor: Optional[str]):
        t = self.tensors.get(tensor) if tensor else None
        return const_value(t) if t is not None else None

    def boundary(self, tensor: str) -> Optional[str]:
        return self._boundary.get(tensor)

    def consumers(self, tensor: str) -> list:
        t = self.tensors.get(tensor)
        if t is None:
            return []
        out = []
        for node in t.outputs:
            view = self._ops[id(node)]
            out.extend((view, i) for i, x in enumerate(node.inputs) if x is t)
        return out

    def touching(self, tensor: str) -> list:
        t = self.tensors[tensor]
        result = []
        for node in t.inputs:
            view = self._ops[id(node)]
            result.extend((view, ("out", i)) for i, x in enumerate(node.outputs) if x is t)
        for view, i in self.consumers(tensor):
            result.append((view, ("in", i)))
        return result

    def param_users(self, tensor: str) -> int:
        t = self.tensors.get(tensor)
        return len({id(n) for n in t.outputs}) if t is not None else 0


def analyze_graph(graph: gs.Graph, ctx) -> ChannelAnalysis:
    opset = _opset(graph)
    return analyze(OnnxView(graph, ctx.analysis(ShapeInfo, graph), opset))


def _opset(graph: gs.Graph) -> int:
    return int(graph.opset) if graph.opset else 13


# ---------------------------------------------------------------------------------------------
# surgery


def new_dims(analysis: ChannelAnalysis, removed: dict) -> dict:
    """tensor -> {axis: kept indices} for every tensor whose channels shrink; checks that what is
    kept on a multi-axis space is a whole sub-grid (e.g. whole attention heads)."""
    kept: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for sid, mask in removed.items():
        if not mask.any():
            continue
        rec = analysis.spaces[sid]
        shape = analysis.view.shape(rec.tensor)
        c = coords(shape, rec.axes)[~mask]
        per_axis = [np.unique(c[:, k]) for k in range(len(rec.axes))]
        if int(np.prod([len(p) for p in per_axis])) != len(c):
            raise ValueError(f"the channels kept on '{rec.tensor}' axes {rec.axes} do not form a grid")
        for k, axis in enumerate(rec.axes):
            if len(per_axis[k]) == shape[axis]:
                continue
            prev = kept[rec.tensor].get(axis)
            if prev is not None and not np.array_equal(prev, per_axis[k]):
                raise ValueError(f"two spaces disagree on the channels kept on '{rec.tensor}' axis {axis}")
            kept[rec.tensor][axis] = per_axis[k]
    return kept


def param_removals(analysis: ChannelAnalysis, removed: dict) -> dict:
    """(param, axis) -> sorted indices to delete."""
    out: dict[tuple, set] = defaultdict(set)
    for edit in analysis.edits:
        sid = analysis.index[edit.space]
        mask = removed.get(sid)
        if mask is None:
            continue
        hit = mask[edit.elems]
        if hit.any():
            out[(edit.param, edit.axis)].update(np.asarray(edit.index)[hit].tolist())
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}


def apply_onnx(graph: gs.Graph, analysis: ChannelAnalysis, groups, names, pass_name: str) -> dict:
    """Remove `groups` (ids) from the graph in place. Returns {tensor: new shape} of changed tensors."""
    view: OnnxView = analysis.view
    removed = analysis.removed_elements(groups)
    kept = new_dims(analysis, removed)
    for (param, axis), idx in param_removals(analysis, removed).items():
        _slice_constant(view.tensors[param], axis, idx)
    new_shapes = {}
    for tensor, axes in kept.items():
        shape = list(view.shape(tensor))
        for axis, keep in axes.items():
            shape[axis] = len(keep)
        new_shapes[tensor] = tuple(shape)
    for op_name, what in analysis.shape_edits.items():
        node = view.node(op_name)
        _fix_shape_bearing(graph, node, what, new_shapes, view, names, pass_name)
    for tensor, shape in new_shapes.items():
        t = view.tensors[tensor]
        if isinstance(t, gs.Variable):
            t.shape = shape if t.dtype is not None else None  # a value_info needs its type
    for t in graph.tensors().values():  # stale inferred shapes downstream would mislead ORT
        if isinstance(t, gs.Variable) and t.name not in new_shapes and not _is_io(graph, t):
            t.shape = None
    return new_shapes


def _is_io(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(x is t for x in graph.inputs) or any(x is t for x in graph.outputs)


def _slice_constant(tensor: gs.Tensor, axis: int, idx: np.ndarray) -> None:
    if isinstance(tensor, gs.Constant):
        tensor.values = np.delete(np.asarray(tensor.values), idx, axis=axis)
        return
    node = tensor.inputs[0]  # a Constant node
    value = node.attrs["value"]
    node.attrs["value"] = gs.Constant(value.name, np.delete(np.asarray(value.values), idx, axis=axis))


def _fix_shape_bearing(graph, node: gs.Node, what: str, new_shapes: dict, view: OnnxView, names, pass_name) -> None:
    if what == "group":
        x = node.inputs[0].name
        if x in new_shapes:
            node.attrs["group"] = int(new_shapes[x][1])
        return
    if what == "reshape":
        y = node.outputs[0].name
        if y not in new_shapes:
            return
        old = const_value(node.inputs[1])
        if old is None:
            raise PassError(pass_name, [], ValueError(
                f"Reshape '{node.name}' has a computed target shape on a pruned tensor"))
        target = np.array(old, dtype=np.int64).copy()
        out_shape = new_shapes[y]
        before = view.shape(y)
        for axis, (a, b) in enumerate(zip(before, out_shape)):
            if a != b:
                target[axis] = b
        if -1 in target.tolist() and sum(1 for v in target if v == -1) == 1:
            pass  # a remaining -1 is inferred from the new element count
        node.inputs[1] = gs.Constant(names.make(pass_name, node.name or "reshape", "shape"), target)
        return
    if what == "split":
        axis = int(node.attrs.get("axis", 0))
        sizes = []
        for out in node.outputs:
            shape = new_shapes.get(out.name) or view.shape(out.name)
            sizes.append(int(shape[axis]))
        sizes = np.array(sizes, dtype=np.int64)
        if "split" in node.attrs:
            node.attrs["split"] = sizes.tolist()
        elif len(node.inputs) > 1 and node.inputs[1].name:
            node.inputs[1] = gs.Constant(names.make(pass_name, node.name or "split", "sizes"), sizes)
        return
    if what == "resize_sizes":
        y = node.outputs[0].name
        if y in new_shapes:
            node.inputs[3] = gs.Constant(names.make(pass_name, node.name or "resize", "sizes"),
                                         np.array(new_shapes[y], dtype=np.int64))
