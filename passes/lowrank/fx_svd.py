"""SVD splitting on the torch side, so a factored model stays trainable (distillation).

    split, stats = svd_split_torch(module, SVDConfig(rank=0.25))

`nn.Linear` / `nn.Conv2d` modules become an `nn.Sequential` of two thinner layers (same
qualname, so fx graphs that call the module keep working); in ATen-level graphs from
`torch.export`, `aten.linear` calls on module parameters are rewritten into two calls. The
input module is never modified.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import fx, nn

from hewn.core.names import matches
from hewn.passes.lowrank.factor import (SVDConfig, config_ranks_skip, factors, pick_rank, relative_error, svd, worth_it)


@dataclass
class TorchFactorizable:
    name: str                    # module qualname (the weight's owner)
    matrix: np.ndarray           # weight as out x in
    weight: str                  # qualname of the weight parameter
    kind: str                    # "linear_module", "conv_module", "aten_linear"
    node: Optional[fx.Node] = None


def torch_factorizable(module: nn.Module, config: SVDConfig) -> tuple[list[TorchFactorizable], list[dict]]:
    found, skipped = [], []
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            found.append(TorchFactorizable(name, m.weight.detach().double().numpy(), f"{name}.weight", "linear_module"))
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or isinstance(m.padding, str):
                skipped.append({"node": name, "why": "grouped conv or string padding: not factored"})
                continue
            w = m.weight.detach().double().numpy()
            found.append(TorchFactorizable(name, w.reshape(w.shape[0], -1), f"{name}.weight", "conv_module"))
    if isinstance(module, fx.GraphModule):
        for node in module.graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.linear.default \
                    and len(node.args) >= 2 and getattr(node.args[1], "op", None) == "get_attr":
                qual = node.args[1].target
                w = _get(module, qual)
                owner = qual.rsplit(".", 1)[0] if "." in qual else qual
                found.append(TorchFactorizable(owner, w.detach().double().numpy(), qual, "aten_linear", node))
    out = []
    for item in found:
        if matches(item.name, config.exclude) or ".svd_" in item.weight or item.name.endswith(".svd"):
            continue
        if item.matrix.size < config.min_params:
            skipped.append({"node": item.name, "why": f"{item.matrix.size} weights < min_params={config.min_params}"})
            continue
        out.append(item)
    return out, skipped


def _get(root: nn.Module, qualname: str):
    obj = root
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def svd_split_torch(module: nn.Module, config: SVDConfig = SVDConfig()) -> tuple[nn.Module, dict]:
    """A copy of `module` with every factorizable layer split at its chosen rank (where cheaper)."""
    module = copy.deepcopy(module)
    items, skipped = torch_factorizable(module, config)
    layers = []
    for item in items:
        if config_ranks_skip(config, item.name):
            continue
        m, n = item.matrix.shape
        u, s, vt = svd(item.matrix)
        k = pick_rank(item.name, s, config)
        if not worth_it(m, n, k, config.margin):
            skipped.append({"node": item.name, "why": f"rank {k} of {m}x{n} is not cheaper"})
            continue
        a, b = factors(u, s, vt, k)
        split_torch(module, item, a, b)
        layers.append({"node": item.name, "shape": [m, n], "rank": k, "full_rank": len(s),
                       "weight_rel_error": round(relative_error(s, k), 5)})
    if isinstance(module, fx.GraphModule):
        module.graph.eliminate_dead_code()
        _drop_unread_weights(module, [i.weight for i in items if i.kind == "aten_linear"])
        module.recompile()
    return module, {"layers": layers, "skipped": skipped}


def split_torch(root: nn.Module, item: TorchFactorizable, a: np.ndarray, b: np.ndarray) -> None:
    old = _get(root, item.weight)
    dtype = old.dtype
    ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
    k = tb.shape[0]
    if item.kind == "linear_module":
        lin = root.get_submodule(item.name)
        first = nn.Linear(lin.in_features, k, bias=False)
        second = nn.Linear(k, lin.out_features, bias=lin.bias is not None)
        first.weight.data.copy_(tb)
        second.weight.data.copy_(ta)
        if lin.bias is not None:
            second.bias.data.copy_(lin.bias.data)
        _replace(root, item.name, nn.Sequential(first, second))
    elif item.kind == "conv_module":
        conv = root.get_submodule(item.name)
        first = nn.Conv2d(conv.in_channels, k, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                          bias=False, padding_mode=conv.padding_mode)
        second = nn.Conv2d(k, conv.out_channels, 1, bias=conv.bias is not None)
        first.weight.data.copy_(tb.reshape((k,) + tuple(conv.weight.shape[1:])))
        second.weight.data.copy_(ta.reshape(conv.out_channels, k, 1, 1))
        if conv.bias is not None:
            second.bias.data.copy_(conv.bias.data)
        _replace(root, item.name, nn.Sequential(first, second))
    else:  # aten.linear in an exported graph: two calls on two new parameters of the same owner
        owner = root.get_submodule(item.name) if item.name != item.weight else root
        owner.register_parameter("svd_in", nn.Parameter(tb))
        owner.register_parameter("svd_out", nn.Parameter(ta))
        node = item.node
        graph = node.graph
        with graph.inserting_before(node):
            w_in = graph.get_attr(f"{item.name}.svd_in")
            w_out = graph.get_attr(f"{item.name}.svd_out")
            mid = graph.call_function(torch.ops.aten.linear.default, (node.args[0], w_in))
            rest = tuple(node.args[2:])
            out = graph.call_function(torch.ops.aten.linear.default, (mid, w_out) + rest)
        node.replace_all_uses_with(out)
        graph.erase_node(node)


def _drop_unread_weights(gm: fx.GraphModule, weights: list[str]) -> None:
    """The factored layers' old weights, once no get_attr reads them (they would bloat the export)."""
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for qual in weights:
        if qual not in read:
            owner, _, leaf = qual.rpartition(".")
            module = gm.get_submodule(owner) if owner else gm
            if hasattr(module, leaf):
                delattr(module, leaf)


def _replace(root: nn.Module, qualname: str, new: nn.Module) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
