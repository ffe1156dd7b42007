"""The torch.fx side of channel pruning: an adapter that shows fx nodes to the same rule table
as ONNX ops, and a surgeon that gives modules smaller weights, so the pruned GraphModule stays
trainable (for distillation).

    pruned, stats = prune_torch(model, example_inputs, PruneConfig(amount=0.5))

Works on module-level graphs (`torch.fx.symbolic_trace`) and ATen-level ones (`torch.export`,
which Hugging Face models need); the user's module is never modified.
"""
from __future__ import annotations

import copy
import operator
from typing import Any, Optional

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from hewn.core.errors import TraceError
from hewn.core.torch_step import TorchContext, TorchStep, TorchStepResult
from hewn.frontends.from_torch import capture

from hewn.passes.prune.channel_groups import ChannelAnalysis, analyze
from hewn.passes.prune.channel_rules import OpView, space_rows
from hewn.passes.prune.prune_plan import PruneConfig, choose, group_scores, plan_stats

_UNARY_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                  nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Identity, nn.Mish, nn.Softplus, nn.Hardtanh)
_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_UNARY_FUNCS = {"relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardtanh", "leaky_relu", "elu",
                "dropout", "clone", "contiguous", "alias", "_to_copy", "to", "detach", "hardsigmoid", "relu6",
                "mish", "softplus", "type_as", "float", "erf", "neg", "sqrt", "exp"}
_ELEMENTWISE_FUNCS = {"add": "Add", "iadd": "Add", "sub": "Sub", "rsub": "Sub", "mul": "Mul", "imul": "Mul",
                      "div": "Div", "truediv": "Div", "maximum": "Max", "minimum": "Min", "where": "Where"}
_POOL_FUNCS = {"adaptive_avg_pool2d", "max_pool2d", "avg_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices"}


def _fname(target) -> str:
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name.split("::")[-1]
    return getattr(target, "__name__", str(target))


class FxView:
    """GraphView over an fx GraphModule whose nodes carry `tensor_meta` (ShapeProp)."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.params: dict[str, torch.Tensor] = {}
        self.param_paths: dict[str, str] = {}   # tensor id -> qualified attribute name
        self._param_readers: dict[str, int] = {}
        self._ops: list[OpView] = []
        self._node: dict[str, fx.Node] = {}
        self._consumers: dict[str, list] = {}
        self._producer: dict[str, tuple] = {}
        self._boundary: dict[str, str] = {}
        for node in gm.graph.nodes:
            self._node[node.name] = node
            if node.op == "placeholder":
                self._boundary[node.name] = "graph input"
            elif node.op == "output":
                for arg in _flat_nodes(node.args):
                    self._boundary[arg.name] = "graph output"
            elif node.op == "get_attr":
                value = _attr(gm, node.target)
                if isinstance(value, torch.Tensor):
                    self.params[node.name] = value
                    self.param_paths[node.name] = node.target
            else:
                self._add(node)

    # -- translation ----------------------------------------------------------------------------

    def _param(self, qualname: str) -> Optional[str]:
        value = _attr(self.gm, qualname)
        if value is None:
            return None
        self.params[qualname] = value
        self.param_paths[qualname] = qualname
        return qualname

    def _add(self, node: fx.Node) -> None:
        kind, inputs, attrs = self._translate(node)
        names = tuple(i if isinstance(i, str) or i is None else i.name for i in inputs)
        view = OpView(node.name, kind, names, (node.name,), attrs, _label(node))
        self._ops.append(view)
        for i, t in enumerate(names):
            if t is not None:
                self._consumers.setdefault(t, []).append((view, i))
                self._param_readers[t] = self._param_readers.get(t, 0) + 1
        self._producer[node.name] = (view, ("out", 0))

    def _translate(self, node: fx.Node) -> tuple[str, list, dict]:
        args = [a for a in node.args]
        tensors = [a for a in args if isinstance(a, fx.Node)]
        if node.op == "call_module":
            m = self.modules[node.target]
            t = node.target
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                return "Conv", [args[0], self._param(f"{t}.weight"), self._param(f"{t}.bias") if m.bias is not None else None], {"group": m.groups, "_module": t}
            if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
                return "ConvTranspose", [args[0], self._param(f"{t}.weight"), self._param(f"{t}.bias") if m.bias is not None else None], {"group": m.groups, "_module": t}
            if isinstance(m, nn.Linear):
                return "Linear", [args[0], self._param(f"{t}.weight"), self._param(f"{t}.bias") if m.bias is not None else None], {"_module": t}
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                ps = [self._param(f"{t}.{p}") if getattr(m, p, None) is not None else None
                      for p in ("weight", "bias", "running_mean", "running_var")]
                return "BatchNormalization", [args[0], *ps], {"_module": t}
            if isinstance(m, nn.LayerNorm):
                return "LayerNormalization", [args[0]], {"axis": -len(m.normalized_shape)}
            if isinstance(m, _UNARY_MODULES):
                return "Relu", [args[0]], {}
            if isinstance(m, _POOL_MODULES):
                return "MaxPool", [args[0]], {}
            if isinstance(m, nn.Flatten):
                return ("Flatten" if m.end_dim == -1 else f"module:{type(m).__name__}"), [args[0]], {}
            if isinstance(m, nn.Softmax):
                return "Softmax", [args[0]], {"axis": m.dim if m.dim is not None else -1}
            return f"module:{type(m).__name__}", tensors, {}
        name = _fname(node.target) if node.op == "call_function" else node.target
        kw = node.kwargs
        if name in _UNARY_FUNCS:
            return "Relu", [tensors[0]] if tensors else [], {}
        if name in _ELEMENTWISE_FUNCS:
            return _ELEMENTWISE_FUNCS[name], tensors, {}
        if name in ("cat", "concat"):
            return "Concat", list(args[0]), {"axis": args[1] if len(args) > 1 else kw.get("dim", 0)}
        if name in ("flatten",):
            start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
            return ("Flatten" if end == -1 else "Reshape"), [args[0]], {"axis": start}
        if name in ("view", "reshape", "_unsafe_view", "view_copy"):
            return "Reshape", [args[0]], {"_fx_shape": True}
        if name in ("unsqueeze", "squeeze"):
            return "Unsqueeze", [args[0]], {}
        if name in ("transpose", "permute", "t"):
            return "Transpose", [args[0]], {"perm": self._perm(node, name)}
        if name in ("matmul", "bmm", "mm") or node.target is operator.matmul:
            return "MatMul", tensors[:2], {}
        if name == "linear":
            return "Linear", [args[0], args[1], args[2] if len(args) > 2 else kw.get("bias")], {}
        if name in ("conv2d", "conv1d", "convolution"):
            groups = args[6] if name != "convolution" and len(args) > 6 else (args[8] if len(args) > 8 else 1)
            return "Conv", [args[0], args[1], args[2] if len(args) > 2 else None], {"group": groups}
        if name == "layer_norm":
            return "LayerNormalization", [args[0]], {"axis": -len(args[1])}
        if name in ("batch_norm", "_native_batch_norm_legit_no_training"):
            return "BatchNormalization", [args[0], args[1], args[2], args[3], args[4]], {}
        if name in ("softmax", "_softmax", "log_softmax"):
            return "Softmax", [args[0]], {"axis": args[1] if len(args) > 1 else kw.get("dim", -1)}
        if name == "scaled_dot_product_attention":
            mask = args[3] if len(args) > 3 else kw.get("attn_mask")
            return "ScaledDotProductAttention", [*args[:3], mask], {}
        if name in _POOL_FUNCS:
            return "MaxPool", [args[0]], {}
        if name in ("mean", "sum", "amax"):
            dims = args[1] if len(args) > 1 else kw.get("dim")
            keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
            dims = [dims] if isinstance(dims, int) else dims
            return "ReduceMean", [args[0]], {"_axes": dims, "keepdims": int(bool(keep))}
        if name in ("size",) or (name == "getattr" and len(args) > 1 and args[1] == "shape"):
            return "Shape", [args[0]], {}
        if name == "getitem":
            src = args[0]
            picks = [args[1]] if isinstance(args[1], int) else None
            return "Gather", tensors[:1], {"_picks": picks, "_of_shape": isinstance(src, fx.Node)}
        return f"{node.op}:{name}", tensors, {}

    def _perm(self, node: fx.Node, name: str) -> list:
        rank = len(_shape(node.args[0]))
        if name == "t":
            return [1, 0]
        if name == "permute":
            dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
            return [d % rank for d in dims]
        d0, d1 = node.args[1] % rank, node.args[2] % rank
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return perm

    # -- the GraphView protocol ------------------------------------------------------------------

    def ops(self) -> list[OpView]:
        return self._ops

    def shape(self, tensor: str):
        if tensor in self.params:
            return tuple(self.params[tensor].shape)
        node = self._node.get(tensor)
        return _shape(node) if node is not None else None

    def const(self, tensor: Optional[str]):
        value = self.params.get(tensor) if tensor else None
        return value.detach().cpu().numpy() if value is not None else None

    def boundary(self, tensor: str) -> Optional[str]:
        return self._boundary.get(tensor)

    def consumers(self, tensor: str) -> list:
        return self._consumers.get(tensor, [])

    def touching(self, tensor: str) -> list:
        out = [self._producer[tensor]] if tensor in self._producer else []
        return out + [(view, ("in", i)) for view, i in self.consumers(tensor)]

    def param_users(self, tensor: str) -> int:
        return self._param_readers.get(tensor, 0)


def _flat_nodes(args) -> list:
    out = []
    fx.node.map_arg(args, lambda n: out.append(n))
    return out


def _shape(node) -> Optional[tuple]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(d) for d in meta.shape)


def _attr(root: nn.Module, qualname: str):
    obj: Any = root
    for part in qualname.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def _label(node: fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        return f"{path}:{node.name}"
    return node.name


# ---------------------------------------------------------------------------------------------
# analysis + surgery


def analyze_module(gm: fx.GraphModule, example_inputs: tuple) -> ChannelAnalysis:
    ShapeProp(gm).propagate(*example_inputs)
    return analyze(FxView(gm))


def apply_fx(gm: fx.GraphModule, analysis: ChannelAnalysis, groups) -> None:
    """Remove `groups` from `gm` in place: parameters, module attributes, view/reshape targets."""
    view: FxView = analysis.view
    cuts, new_shapes = analysis.surgery(groups)
    for (param, axis), idx in cuts.items():
        path = view.param_paths[param]
        old = _attr(gm, path)
        keep = torch.from_numpy(np.setdiff1d(np.arange(old.shape[axis]), idx))
        new = torch.index_select(old.detach(), axis, keep).clone()
        _set_attr(gm, path, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new)
    for op in analysis.ops.values():
        if op.attrs.get("_module"):
            _fix_module(view.modules[op.attrs["_module"]], op, new_shapes)
    for name, what in analysis.shape_edits.items():
        node = view._node[name]
        if what == "reshape" and name in new_shapes:
            _fix_view(node, new_shapes[name], view.shape(name))
        elif what == "group" and node.op == "call_function":
            raise TraceError(f"depthwise aten convolution '{name}' cannot be re-grouped yet")
    gm.recompile()


def _set_attr(root: nn.Module, qualname: str, value) -> None:
    *parents, last = qualname.split(".")
    owner = _attr(root, ".".join(parents)) if parents else root
    if isinstance(value, nn.Parameter) or last not in getattr(owner, "_buffers", {}):
        setattr(owner, last, value)
    else:
        owner._buffers[last] = value


def _fix_module(m: nn.Module, op: OpView, new_shapes: dict) -> None:
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if m.groups > 1 and m.groups == m.in_channels:  # depthwise stays depthwise
            x = new_shapes.get(op.inputs[0])
            m.groups = x[1] if x is not None else m.groups
        m.out_channels = m.weight.shape[0]
        m.in_channels = m.weight.shape[1] * m.groups
    elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        m.in_channels, m.out_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
    elif isinstance(m, nn.Linear):
        m.out_features, m.in_features = m.weight.shape
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        m.num_features = m.running_mean.shape[0] if m.running_mean is not None else m.weight.shape[0]


def _fix_view(node: fx.Node, new: tuple, old: tuple) -> None:
    args = list(node.args)
    if len(args) == 2 and isinstance(args[1], (list, tuple)):
        target, packed = list(args[1]), True
    else:
        target, packed = list(args[1:]), False
    for axis, (a, b) in enumerate(zip(old, new)):
        if a != b:
            if isinstance(target[axis], fx.Node):
                raise TraceError(f"'{node.name}' computes its target shape at axis {axis}; hewn cannot rewrite it")
            target[axis] = b
    node.args = (args[0], target) if packed else (args[0], *target)


def prune_torch(model: nn.Module, example_inputs, config: PruneConfig = PruneConfig(), *, round_to: int = 8,
                loss_fn=None, data=None) -> tuple[fx.GraphModule, dict]:
    """Prune a torch module: returns (a smaller, trainable GraphModule, stats). `importance="taylor"`
    needs `loss_fn(outputs, batch)` and `data` (an iterable of input tuples / batches)."""
    captured = capture(model, example_inputs)
    gm = copy.deepcopy(captured.graph_module)
    analysis = analyze_module(gm, captured.example_inputs)
    families = analysis.prunable()
    stats = {"capture": captured.how, "blocked": analysis.summary()["blocked"], "families": len(analysis.families),
             "prunable_families": len(families)}
    if config.amount == 0 or not families:
        return gm, stats
    grads = _taylor_grads(gm, loss_fn, data, analysis) if config.importance == "taylor" else None
    activations = _fx_activations(gm, analysis, families, data or [captured.example_inputs]) \
        if config.importance == "activation" else None
    scores = group_scores(analysis, families, config.importance, activations, grads)
    plan = choose(analysis, config, scores, round_to, families)
    apply_fx(gm, analysis, plan.groups)
    stats.update(plan_stats(analysis, plan, round_to, config))
    return gm, stats


def _taylor_grads(gm, loss_fn, data, analysis):
    if loss_fn is None or data is None:
        raise TraceError("importance='taylor' needs loss_fn(outputs, batch) and data to take gradients on")
    gm.zero_grad()
    gm.train(False)
    for batch in data:
        inputs = batch if isinstance(batch, (tuple, list)) else (batch,)
        loss_fn(gm(*inputs), batch).backward()
    view = analysis.view
    grads = {}
    for tid, path in view.param_paths.items():
        p = _attr(gm, path)
        if isinstance(p, nn.Parameter) and p.grad is not None:
            grads[tid] = p.grad.detach().numpy()
    gm.zero_grad()
    return grads.get


def _fx_activations(gm, analysis, families, data) -> dict:
    """Mean |activation| per space element, accumulated batch by batch through an fx Interpreter."""
    wanted: dict[str, list] = {}
    for fam in families:
        for sid in fam.spaces:
            if analysis.spaces[sid].tensor not in analysis.view.params:
                wanted.setdefault(analysis.spaces[sid].tensor, []).append(sid)
    sums: dict[int, np.ndarray] = {}
    count = 0

    class Probe(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            for sid in wanted.get(n.name, ()):
                x = out.detach().abs().double().numpy()
                sums[sid] = sums.get(sid, 0) + space_rows(x, analysis.spaces[sid].axes).mean(1)
            return out

    with torch.no_grad():
        for batch in data:
            Probe(gm).run(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
            count += 1
    return {sid: s / max(count, 1) for sid, s in sums.items()}


class PruneTorch(TorchStep):
    """Channel pruning on the torch side (PruneConfig): the pruned model stays trainable."""

    name = "prune_torch"

    def run(self, module, ctx: TorchContext) -> TorchStepResult:
        pruned, stats = prune_torch(module, ctx.captured.example_inputs, self.config,
                                    round_to=ctx.target.channel_multiple)
        return TorchStepResult(pruned, {"pruning": stats})
