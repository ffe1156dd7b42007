"""The ONNX side of channel pruning: the graph adapter the rules read, and the surgeon that
removes a decided set of groups from an onnx-graphsurgeon Graph (initializers, Reshape
targets, Split sizes, depthwise `group`)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.errors import PassError

from hewn.passes.prune.channel_groups import ChannelAnalysis, analyze
from hewn.passes.prune.channel_rules import OpView
from hewn.core.graph_utils import const_value
from hewn.passes.analysis.shape_inference import ShapeInfo

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
        if node.op in ("Gather", "Slice"):
            attrs["_picks"] = self._picks(node)
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


def probe_values(graph: gs.Graph, tensors, ctx):
    """Runs the graph on each reference input with `tensors` exposed as outputs and yields
    {name: value} per input: one sample in memory at a time (constants are not exposed)."""
    from hewn.core.ir import to_model
    from hewn.core.runtime import make_session, run

    probe = graph.copy()
    known = {t.name for t in probe.outputs}
    all_tensors = probe.tensors()
    for name in tensors:
        if name not in known and not isinstance(all_tensors[name], gs.Constant):
            probe.outputs.append(gs.Variable(name, dtype=all_tensors[name].dtype or np.float32))
    session = make_session(to_model(probe, ir_version=ctx.ir_version))
    names = [o.name for o in session.get_outputs()]
    for feeds in ctx.reference.feeds:
        yield dict(zip(names, run(session, None, feeds)))


# ---------------------------------------------------------------------------------------------
# surgery


def apply_onnx(graph: gs.Graph, analysis: ChannelAnalysis, groups, names, pass_name: str) -> dict:
    """Remove `groups` (ids) from the graph in place. Returns {tensor: new shape} of changed tensors."""
    view: OnnxView = analysis.view
    cuts, new_shapes = analysis.surgery(groups)
    for (param, axis), idx in cuts.items():
        _slice_constant(view.tensors[param], axis, idx)
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
