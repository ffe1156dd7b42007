"""EliminateDeadChannels: remove channel groups whose value never varies, folding a constant
channel's contribution into its readers' biases so that the outputs do not change.

Two kinds of evidence:
- proven: every producer of the group has all-zero weights for it, so the channel is its bias
  (then BN/ReLU/... of a constant) for every input;
- observed (`use_calibration=True`): the channel is constant at every reader on all the
  reference/calibration inputs, e.g. a ReLU that never fires. This holds on that data only,
  which the report says.
A nonzero constant read through a padded k×k Conv differs at the borders and is left intact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult

from hewn.core.graph_utils import const_value
from hewn.passes.prune.channel_rules import space_rows
from hewn.passes.prune.onnx_channels import apply_onnx, probe_values
from hewn.passes.prune.prune_channels import ChannelGroups
from hewn.passes.analysis.shape_inference import ShapeInfo


class EliminateDeadChannels(Pass):
    name = "eliminate_dead_channels"
    requires = (ShapeInfo, ChannelGroups)

    @dataclass(frozen=True)
    class Config:
        use_calibration: bool = True   # also remove channels observed constant on the reference inputs
        atol: float = 0.0              # how constant "constant" is (max - min)

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        analysis = ctx.analysis(ChannelGroups, graph).result
        families = [f for f in analysis.families if f.blocked is None]
        if not families:
            return PassResult(False, {})
        proven = _zero_weight_groups(analysis, families)
        ranges = _sink_ranges(graph, analysis, families, ctx) if (self.config.use_calibration or proven) else {}
        dead, kinds, skipped = [], {}, []
        sink_sids = {analysis.index[e.space] for e in analysis.edits if e.role == "sink"}
        for fam in families:
            alive = len(fam.groups)
            for gid in fam.groups:
                if alive <= 1:
                    break  # keep one channel: a zero-width tensor is not a model
                consts = _constant_values(analysis, gid, ranges, self.config.atol, sink_sids)
                if consts is None or (gid not in proven and not self.config.use_calibration):
                    continue
                why = _fold_blocker(analysis, gid, consts)
                if why:
                    skipped.append({"channels": fam.producers, "why": why})
                    continue
                dead.append((gid, consts))
                kinds[gid] = "zero weights" if gid in proven else "constant on the reference inputs"
                alive -= 1
        if not dead:
            return PassResult(False, {"skipped": skipped})
        for gid, consts in dead:
            _fold_into_biases(graph, analysis, gid, consts, ctx)
        apply_onnx(graph, analysis, [g for g, _ in dead], ctx.names, self.name)
        for item in skipped:
            ctx.note(self.name, ", ".join(item["channels"][:3]), item["why"])
        by_kind = {k: sum(1 for v in kinds.values() if v == k) for k in sorted(set(kinds.values()))}
        return PassResult(True, {"removed": len(dead), "evidence": by_kind, "skipped": skipped})


def _zero_weight_groups(analysis, families) -> set:
    out = set()
    for fam in families:
        producers = [e for e in analysis.family_edits(fam) if e.role == "producer"]
        if not producers:
            continue
        for gid in fam.groups:
            members = analysis.groups[gid].members
            zero = True
            for e in producers:
                sid = analysis.index[e.space]
                w = analysis.view.const(e.param)
                idx = e.index[np.isin(e.elems, members.get(sid, []))]
                if np.any(np.take(w, idx, axis=e.axis)):
                    zero = False
                    break
            if zero:
                out.add(gid)
    return out


def _sink_ranges(graph, analysis, families, ctx) -> dict:
    """space id -> (min, max) per element, over the reference inputs, for spaces read by sinks."""
    if ctx.reference is None:
        return {}
    sink_spaces = {analysis.index[e.space] for f in families for e in analysis.family_edits(f) if e.role == "sink"}
    tensors = sorted({analysis.spaces[s].tensor for s in sink_spaces})
    lo: dict[int, np.ndarray] = {}
    hi: dict[int, np.ndarray] = {}
    for values in probe_values(graph, tensors, ctx):
        for sid in sink_spaces:
            rec = analysis.spaces[sid]
            if rec.tensor not in values:
                continue
            rows = space_rows(np.asarray(values[rec.tensor], dtype=np.float64), rec.axes)
            lo[sid] = np.minimum(lo.get(sid, np.inf), rows.min(1))
            hi[sid] = np.maximum(hi.get(sid, -np.inf), rows.max(1))
    return {sid: (lo[sid], hi[sid]) for sid in lo}


def _constant_values(analysis, gid, ranges, atol, sink_sids):
    """space id -> constant per element of the group at every sink-read space, or None."""
    members = analysis.groups[gid].members
    consts = {}
    for sid, elems in members.items():
        if sid not in sink_sids:
            continue
        if sid not in ranges:
            return None
        lo, hi = ranges[sid]
        if np.any(hi[elems] - lo[elems] > atol):
            return None
        consts[sid] = lo[elems]
    return consts or None


def _sink_edits(analysis, gid):
    members = analysis.groups[gid].members
    for e in analysis.edits:
        sid = analysis.index[e.space]
        if e.role == "sink" and sid in members:
            yield e, sid, members[sid]


def _fold_blocker(analysis, gid, consts):
    for e, sid, elems in _sink_edits(analysis, gid):
        if not np.any(consts[sid]):
            continue
        op = analysis.ops[e.op]
        if op.kind == "Conv":
            w = analysis.view.const(e.param)
            pads = op.attrs.get("pads") or [0]
            if (any(pads) or op.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")) and w.shape[2:] != (1,) * (w.ndim - 2):
                return f"a constant channel read by padded Conv '{op.label}' differs at the borders"
        elif op.kind == "MatMul":
            if _matmul_bias(analysis, op) is None:
                return f"MatMul '{op.label}' has no constant bias Add to fold the constant channel into"
        elif op.kind != "Gemm":
            return f"cannot fold a constant channel into {op.kind} '{op.label}'"
    return None


def _matmul_bias(analysis, op):
    readers = analysis.view.consumers(op.outputs[0])
    if len(readers) != 1 or readers[0][0].kind != "Add":
        return None
    add = readers[0][0]
    other = [t for t in add.inputs if t != op.outputs[0]]
    return other[0] if other and analysis.view.const(other[0]) is not None else None


def _fold_into_biases(graph, analysis, gid, consts, ctx) -> None:
    """Readers see the constant c_i on the channels removed: add W[:, i] · c_i to their biases."""
    tensors = graph.tensors()
    for e, sid, elems in _sink_edits(analysis, gid):
        c = consts[sid]
        if not np.any(c):
            continue
        op = analysis.ops[e.op]
        node = analysis.view.node(op.name)
        w = analysis.view.const(e.param).astype(np.float64)
        lookup = dict(zip(np.asarray(e.elems).tolist(), np.asarray(e.index).tolist()))
        idx = [lookup[x] for x in np.asarray(elems).tolist()]  # param index of each removed element, in c's order
        slab = np.take(w, idx, axis=e.axis)                 # the weights reading the removed channels
        shaped = np.moveaxis(slab, e.axis, -1) @ c.astype(np.float64)  # contract the channel axis
        if op.kind == "Conv":
            delta = shaped.reshape(shaped.shape[0], -1).sum(1)
            _add_to_input(node, 2, delta, ctx, "bias")
        elif op.kind == "Gemm":
            _add_to_input(node, 2, shaped.ravel(), ctx, "bias")
        else:
            bias = tensors[_matmul_bias(analysis, op)]
            bias.values = (np.asarray(bias.values) + shaped.ravel()).astype(bias.values.dtype)


def _add_to_input(node: gs.Node, i: int, delta: np.ndarray, ctx, role: str) -> None:
    if len(node.inputs) > i and node.inputs[i].name:
        bias = node.inputs[i]  # edited in place: the surgery that follows slices this same tensor
        if isinstance(bias, gs.Constant) and len(bias.outputs) == 1:
            bias.values = (np.asarray(bias.values) + delta).astype(bias.values.dtype)
        else:
            current = const_value(bias)
            node.inputs[i] = gs.Constant(ctx.names.make("eliminate_dead_channels", node.name or node.op, role),
                                         (current + delta).astype(current.dtype))
    else:
        while len(node.inputs) < i:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(gs.Constant(ctx.names.make("eliminate_dead_channels", node.name or node.op, role),
                                       delta.astype(np.float32)))
