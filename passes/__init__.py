"""hewn's passes and analyses, one folder per technique (ONNX and torch sides side by side):

    analysis/  ShapeInfo, CostModel (the one MAC model), CheckOpSupport
    cleanup/   FoldConstants, RemoveIdentity, EliminateDeadNodes, FoldBatchNorm, FoldRedundantPairs, StaticShapes,
               FoldPadIntoConv
    prune/     channel dependency rules and groups, PruneChannels (ONNX), prune_torch (fx), dead channels, Sparsify
    quant/     QuantSpec/schemes, Calibrate, InsertQDQ, Quantize (+ mixed precision), SmoothQuant, Float16
    lowrank/   SVDSplit (ONNX), svd_split_torch (fx)
    fusion/    FuseTransformer, FuseAttention
    planner/   sensitivity, the budget planner (PlanStructure on ONNX, plan_torch on fx), the budget split
    distill/   knowledge distillation (DistillConfig, distill)

REGISTRY maps the names used in pipelines and `passes=[...]` to classes. Pass authors find the
infrastructure here too: Pass, PassResult, Analysis, Context, PassManager, build_pipeline, and
to_graph / to_model (ModelProto <-> onnx-graphsurgeon Graph).

Everything here is lazy: importing one pass module (or hewn.passes itself) loads that module and
what it imports, nothing more. REGISTRY knows each pass by "module:Class" and imports a module the
first time its pass is looked up; the other names load on first access (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    from hewn.core.manager import PipelineItem
    from hewn.core.pass_infra import Pass

# pass name (its class's `name`) -> "module:Class"; a test checks that the two names agree
_PASSES = {
    "fold_constants": "hewn.passes.cleanup.constant_folding:FoldConstants",
    "remove_identity": "hewn.passes.cleanup.remove_identity:RemoveIdentity",
    "eliminate_dead_nodes": "hewn.passes.cleanup.dead_code:EliminateDeadNodes",
    "fold_batchnorm": "hewn.passes.cleanup.fold_batchnorm:FoldBatchNorm",
    "fold_redundant_pairs": "hewn.passes.cleanup.redundant_pairs:FoldRedundantPairs",
    "prune_channels": "hewn.passes.prune.prune_channels:PruneChannels",
    "eliminate_dead_channels": "hewn.passes.prune.dead_channels:EliminateDeadChannels",
    "insert_qdq": "hewn.passes.quant.insert_qdq:InsertQDQ",
    "quantize": "hewn.passes.quant.quantize:Quantize",
    "smooth_quant": "hewn.passes.quant.smooth_quant:SmoothQuant",
    "svd_split": "hewn.passes.lowrank.svd_split:SVDSplit",
    "plan_structure": "hewn.passes.planner.plan_structure:PlanStructure",
    "fuse_transformer": "hewn.passes.fusion.fuse_transformer:FuseTransformer",
    "fuse_attention": "hewn.passes.fusion.fuse_attention:FuseAttention",
    "float16": "hewn.passes.quant.float16:Float16",
    "sparsify": "hewn.passes.prune.sparsify:Sparsify",
    "static_shapes": "hewn.passes.cleanup.static_shapes:StaticShapes",
    "check_op_support": "hewn.passes.analysis.op_support:CheckOpSupport",
    "fold_pad_into_conv": "hewn.passes.cleanup.fold_pad:FoldPadIntoConv",
    "weight_only": "hewn.passes.quant.weight_only.compress:WeightOnly",
    "constant_reshape_targets": "hewn.passes.cleanup.reshape_targets:ConstantReshapeTargets",
    "fuse_cached_attention": "hewn.passes.fusion.fuse_cached_attention:FuseCachedAttention",
    "fuse_rotary": "hewn.passes.fusion.fuse_rotary:FuseRotary",
    "fuse_gelu_tanh": "hewn.passes.fusion.fuse_gelu:FuseGeluTanh",
}

# exported name -> the module that defines it
_EXPORTS = {
    "to_graph": "hewn.core.ir", "to_model": "hewn.core.ir",
    "FixedPoint": "hewn.core.manager", "Instrument": "hewn.core.manager", "PassManager": "hewn.core.manager",
    "PipelineItem": "hewn.core.manager",
    "Analysis": "hewn.core.pass_infra", "Context": "hewn.core.pass_infra", "Pass": "hewn.core.pass_infra",
    "PassResult": "hewn.core.pass_infra", "Reference": "hewn.core.pass_infra",
    "CostModel": "hewn.passes.analysis.cost_model", "ShapeInfo": "hewn.passes.analysis.shape_inference",
    "ChannelGroups": "hewn.passes.prune.prune_channels", "Calibrate": "hewn.passes.quant.calibrate",
    **{path.split(":")[1]: path.split(":")[0] for path in _PASSES.values()},
}


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Mapping):
    """pass name -> Pass class. Names, `in`, len and iteration need no import; looking a name up
    imports its module once (values() and items() therefore import every pass)."""

    def __init__(self, paths: Mapping[str, str]):
        self._paths = dict(paths)
        self._classes: dict[str, type[Pass]] = {}

    def __getitem__(self, name: str) -> type[Pass]:
        if name not in self._classes:
            self._classes[name] = _load(self._paths[name])  # KeyError for an unknown name
        return self._classes[name]

    def __contains__(self, name) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, name: str) -> str:
        """Where the pass is defined, "module:Class", without importing it."""
        return self._paths[name]

    def __repr__(self) -> str:
        return f"Registry({self._paths!r})"


REGISTRY = Registry(_PASSES)


def build_pipeline(steps: Sequence, configs: Mapping[str, Mapping] | None = None) -> list[PipelineItem]:
    """PassManager items from pass names, (name, {options}) pairs, Pass instances, or tuples of
    those run as a fixed-point group; names are looked up in REGISTRY."""
    from hewn.core.pipeline import build_pipeline as build

    return build(steps, REGISTRY, configs)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hewn.passes' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["REGISTRY", "build_pipeline", "to_graph", "to_model", "Pass", "PassResult", "Analysis", "Context", "Reference", "PassManager",
           "FixedPoint", "Instrument", "FoldConstants", "RemoveIdentity", "EliminateDeadNodes", "FoldBatchNorm",
           "FoldRedundantPairs", "ShapeInfo", "CostModel", "ChannelGroups", "PruneChannels", "EliminateDeadChannels",
           "InsertQDQ", "Calibrate", "Quantize", "SmoothQuant", "SVDSplit", "PlanStructure", "FuseTransformer",
           "FuseAttention", "Float16", "Sparsify", "StaticShapes", "CheckOpSupport", "FoldPadIntoConv"]
