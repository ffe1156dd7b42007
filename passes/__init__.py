"""hewn's passes and analyses. REGISTRY maps the names used in pipelines and `passes=[...]` to classes."""
from __future__ import annotations

from compiler.pass_infra import Pass

from .constant_folding import FoldConstants
from .cost_model import CostModel
from .dead_channels import EliminateDeadChannels
from .dead_code import EliminateDeadNodes
from .fold_batchnorm import FoldBatchNorm
from .insert_qdq import InsertQDQ
from .quantize import Quantize
from .smooth_quant import SmoothQuant
from .calibrate import Calibrate
from .prune_channels import ChannelGroups, PruneChannels
from .redundant_pairs import FoldRedundantPairs
from .remove_identity import RemoveIdentity
from .shape_inference import ShapeInfo
from .svd_split import SVDSplit
from .plan_structure import PlanStructure
from .float16 import Float16
from .fuse_attention import FuseAttention
from .fuse_transformer import FuseTransformer
from .op_support import CheckOpSupport
from .sparsify import Sparsify
from .static_shapes import StaticShapes

REGISTRY: dict[str, type[Pass]] = {
    FoldConstants.name: FoldConstants,
    RemoveIdentity.name: RemoveIdentity,
    EliminateDeadNodes.name: EliminateDeadNodes,
    FoldBatchNorm.name: FoldBatchNorm,
    FoldRedundantPairs.name: FoldRedundantPairs,
    PruneChannels.name: PruneChannels,
    EliminateDeadChannels.name: EliminateDeadChannels,
    InsertQDQ.name: InsertQDQ,
    Quantize.name: Quantize,
    SmoothQuant.name: SmoothQuant,
    SVDSplit.name: SVDSplit,
    PlanStructure.name: PlanStructure,
    FuseTransformer.name: FuseTransformer,
    FuseAttention.name: FuseAttention,
    Float16.name: Float16,
    Sparsify.name: Sparsify,
    StaticShapes.name: StaticShapes,
    CheckOpSupport.name: CheckOpSupport,
}

__all__ = ["REGISTRY", "FoldConstants", "RemoveIdentity", "EliminateDeadNodes", "FoldBatchNorm",
           "FoldRedundantPairs", "ShapeInfo", "CostModel", "ChannelGroups", "PruneChannels", "EliminateDeadChannels",
           "InsertQDQ", "Calibrate", "Quantize", "SmoothQuant", "SVDSplit", "PlanStructure",
           "FuseTransformer", "FuseAttention", "Float16", "Sparsify", "StaticShapes", "CheckOpSupport"]
