"""ChannelGroups: which channels of a model must be removed together (IR-neutral).

Starting from every producer (Conv, Gemm, Linear, MatMul with a constant weight), the analysis
walks the channel rule table (`channel_rules.RULES`) through the graph. Each visited space
gets one element per channel; rules couple elements across ops, and a union-find over the
elements gives the *groups*: sets of channels that are pruned as one (a residual stream's
channel k in every block, a DenseNet channel in every Concat it reaches, an attention head in
Q, K, V and the output projection). Groups with the same footprint form a *family* — the
unit a policy gives a ratio to. A space that hits a graph boundary or an op outside the table
blocks every group touching it, with the reason.

The networkx graph of spaces (`space_graph`) is kept for the report and for debugging.
"""
from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Optional

import networkx as nx
import numpy as np

from hewn.passes.prune.channel_rules import (PRODUCERS, RULES, Block, Effect, GraphView, OpView, ParamEdit, coords, size_of)


@dataclass
class SpaceRec:
    id: int
    tensor: str
    axes: tuple
    size: int
    offset: int
    blocked: list = field(default_factory=list)


@dataclass
class Group:
    id: int
    members: dict            # space id -> np.ndarray of element indices
    family: int = -1


@dataclass
class Family:
    id: int
    groups: list             # group ids
    spaces: list             # space ids
    per_group: dict          # space id -> elements per group
    producers: list          # labels of the ops that create these channels
    blocked: Optional[str] = None

    @property
    def width(self) -> int:
        return len(self.groups)


class _UnionFind:
    def __init__(self):
        self.parent = np.zeros(0, dtype=np.int64)

    def grow(self, n: int) -> int:
        start = len(self.parent)
        self.parent = np.concatenate([self.parent, np.arange(start, start + n)])
        return start

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


class ChannelAnalysis:
    """The result: spaces, groups, families, param and shape edits. Built by `analyze(view)`."""

    def __init__(self, view: GraphView, ops: list):
        self.view = view
        self.ops = {op.name: op for op in ops}
        self.spaces: list[SpaceRec] = []
        self.index: dict[tuple, int] = {}
        self.by_tensor: dict[str, list[int]] = defaultdict(list)
        self.edits: list[ParamEdit] = []
        self.shape_edits: dict[str, str] = {}
        self.space_graph = nx.MultiGraph()
        self.groups: list[Group] = []
        self.families: list[Family] = []
        self.not_analyzed: list[dict] = []
        self._uf = _UnionFind()
        self._queue: deque = deque()

    # -- building -------------------------------------------------------------------------

    def space(self, tensor: str, axes: tuple) -> int:
        key = (tensor, tuple(axes))
        if key in self.index:
            return self.index[key]
        shape = self.view.shape(tensor)
        sid = len(self.spaces)
        rec = SpaceRec(sid, tensor, tuple(axes), size_of(shape, axes), 0)
        rec.offset = self._uf.grow(rec.size)
        self.spaces.append(rec)
        self.index[key] = sid
        self.space_graph.add_node(sid, tensor=tensor, axes=tuple(axes))
        for other in list(self.by_tensor[tensor]):
            self._tie_same_tensor(sid, other)
        self.by_tensor[tensor].append(sid)
        boundary = self.view.boundary(tensor)
        if boundary:
            rec.blocked.append(f"'{tensor}' is a {boundary}; its width is part of the model's interface")
        self._queue.append(sid)
        return sid

    def _tie_same_tensor(self, a: int, b: int) -> None:
        """Two spaces on one tensor share the elements that agree on their common axes."""
        sa, sb = self.spaces[a], self.spaces[b]
        common = [x for x in sa.axes if x in sb.axes]
        if not common:
            return
        shape = self.view.shape(sa.tensor)
        sizes = [int(shape[x]) for x in common]
        keys, ids = [], []
        for rec in (sa, sb):
            c = coords(shape, rec.axes)[:, [rec.axes.index(x) for x in common]]
            keys.append(np.ravel_multi_index(tuple(c.T), sizes))
            ids.append(rec.offset + np.arange(rec.size))
        keys, ids = np.concatenate(keys), np.concatenate(ids)
        order = np.argsort(keys, kind="stable")
        keys, ids = keys[order], ids[order]
        same = keys[1:] == keys[:-1]  # tie each element to the next one with the same key
        self._uf.union_pairs(ids[:-1][same], ids[1:][same])
        self.space_graph.add_edge(a, b, op="(same tensor)")

    def link(self, sid: int, tensor: str, axes: tuple, mine: np.ndarray, theirs: np.ndarray, op: OpView) -> None:
        rec = self.spaces[sid]
        if self.view.const(tensor) is not None:  # e.g. Unsqueeze(constant scale) feeding a Mul
            if len(axes) != 1 or self.view.param_users(tensor) > 1:
                rec.blocked.append(f"constant '{tensor}' read by '{op.label}' cannot be sliced for these channels")
                return
            self.edits.append(ParamEdit(op.name, tensor, axes[0], (rec.tensor, rec.axes), np.asarray(mine),
                                        np.asarray(theirs), "other"))
            return
        other = self.space(tensor, axes)
        self._uf.union_pairs(self.spaces[sid].offset + np.asarray(mine), self.spaces[other].offset + np.asarray(theirs))
        self.space_graph.add_edge(sid, other, op=op.name)

    def visit(self, sid: int) -> None:
        rec = self.spaces[sid]
        if any(set(self.spaces[o].axes) < set(rec.axes) for o in self.by_tensor[rec.tensor]):
            # e.g. (c, h, w) seen back through a Flatten: tied to the channel space (c,) on the same
            # tensor, which carries the ops' rules; its spatial axes ride along.
            return
        for op, slot in self.view.touching(rec.tensor):
            rule = RULES.get(op.kind)
            if rule is None:
                rec.blocked.append(f"'{op.label}' ({op.kind}) is not in hewn's channel rule table")
                continue
            try:
                effect: Effect = rule(op, self.view, slot, rec.axes)
            except Block as why:
                rec.blocked.append(str(why))
                continue
            for tensor, axes, mine, theirs in effect.links:
                self.link(sid, tensor, tuple(axes), mine, theirs, op)
            for edit in effect.edits:
                self.edits.append(edit)
            for name, what in effect.shape_edits:
                self.shape_edits[name] = what

    def seed(self) -> None:
        for op in self.ops.values():
            rank_of = PRODUCERS.get(op.kind)
            if rank_of is None or not op.outputs or op.outputs[0] is None:
                continue
            if op.kind == "MatMul" and self.view.const(op.inputs[1]) is None:
                continue
            shape = self.view.shape(op.outputs[0])
            axis = rank_of(len(shape)) if shape is not None else None
            if axis is None or not isinstance(shape[axis], (int, np.integer)):
                self.not_analyzed.append({"op": op.label, "why": "its channel count is unknown"})
                continue
            self.space(op.outputs[0], (axis,))
        while self._queue:
            self.visit(self._queue.popleft())

    # -- grouping -------------------------------------------------------------------------

    def finish(self) -> None:
        roots = self._uf.roots()
        members: dict[int, dict[int, list]] = defaultdict(dict)
        blocked_roots: dict[int, str] = {}
        for rec in self.spaces:
            r = roots[rec.offset:rec.offset + rec.size]
            order = np.argsort(r, kind="stable")
            uniq, starts = np.unique(r[order], return_index=True)
            bounds = list(starts[1:]) + [len(order)]
            for root, lo, hi in zip(uniq.tolist(), starts.tolist(), bounds):
                members[root][rec.id] = np.sort(order[lo:hi])
                if rec.blocked and root not in blocked_roots:
                    blocked_roots[root] = f"{rec.blocked[0]} (at '{rec.tensor}')"
        families: dict[tuple, Family] = {}
        for root in sorted(members):
            mem = members[root]
            group = Group(len(self.groups), mem)
            signature = tuple(sorted((sid, len(e)) for sid, e in mem.items()))
            fam = families.get(signature)
            if fam is None:
                fam = Family(len(families), [], [s for s, _ in signature], dict(signature), self._producers(mem))
                families[signature] = fam
            fam.groups.append(group.id)
            group.family = fam.id
            if root in blocked_roots and fam.blocked is None:
                fam.blocked = blocked_roots[root]
            self.groups.append(group)
        self.families = list(families.values())

    def _producers(self, members: dict) -> list:
        spaces = {(self.spaces[s].tensor, self.spaces[s].axes) for s in members}
        labels = [self.ops[e.op].label or e.op for e in self.edits if e.role == "producer" and e.space in spaces]
        return sorted(set(labels), key=labels.index)

    # -- queries ------------------------------------------------------------------------------

    def prunable(self) -> list[Family]:
        return [f for f in self.families if f.blocked is None and f.width > 1 and self.family_edits(f)]

    def family_edits(self, fam: Family) -> list[ParamEdit]:
        spaces = {(self.spaces[s].tensor, self.spaces[s].axes) for s in fam.spaces}
        return [e for e in self.edits if e.space in spaces]

    def removed_elements(self, groups) -> dict[int, np.ndarray]:
        """space id -> boolean mask of removed elements, for a collection of group ids."""
        masks: dict[int, np.ndarray] = {}
        for gid in groups:
            for sid, elems in self.groups[gid].members.items():
                if sid not in masks:
                    masks[sid] = np.zeros(self.spaces[sid].size, dtype=bool)
                masks[sid][elems] = True
        return masks

    def kept_indices(self, removed: dict) -> dict:
        """tensor -> {axis: kept indices} for every tensor whose channels shrink; checks that what
        is kept on a multi-axis space is a whole sub-grid (e.g. whole attention heads)."""
        kept: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
        for sid, mask in removed.items():
            if not mask.any():
                continue
            rec = self.spaces[sid]
            shape = self.view.shape(rec.tensor)
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

    def param_cuts(self, removed: dict) -> dict:
        """(param, axis) -> sorted indices to delete."""
        out: dict[tuple, set] = defaultdict(set)
        for edit in self.edits:
            mask = removed.get(self.index[edit.space])
            if mask is None:
                continue
            hit = mask[edit.elems]
            if hit.any():
                out[(edit.param, edit.axis)].update(np.asarray(edit.index)[hit].tolist())
        return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}

    def surgery(self, groups) -> tuple[dict, dict]:
        """What removing `groups` means for any IR: ((param, axis) -> indices to delete,
        tensor -> its new shape). Each IR's surgeon applies it."""
        removed = self.removed_elements(groups)
        new_shapes = {}
        for tensor, axes in self.kept_indices(removed).items():
            shape = list(self.view.shape(tensor))
            for axis, keep in axes.items():
                shape[axis] = len(keep)
            new_shapes[tensor] = tuple(shape)
        return self.param_cuts(removed), new_shapes

    def summary(self) -> dict:
        fams = self.families
        return {
            "spaces": len(self.spaces), "groups": len(self.groups), "families": len(fams),
            "prunable_families": len(self.prunable()),
            "blocked": [{"channels": f.producers or [self.spaces[f.spaces[0]].tensor], "why": f.blocked}
                        for f in fams if f.blocked],
        }


def analyze(view) -> ChannelAnalysis:
    """Run the channel dependency analysis over an IR adapter (see onnx_channels / fx adapter)."""
    result = ChannelAnalysis(view, view.ops())
    result.seed()
    result.finish()
    return result
