"""Attention-fusion blocks: one family per module, all behind :func:`create_fusion`.

Every fusion is ``fusion(x, y) -> z`` with ``z`` shaped like ``x``, and starts (zero-initialised)
as exactly ``x + y`` -- except ``cross_modal``, which starts as ``x``.
"""

from edgefuse.blocks.registry import create_fusion, list_fusions, register_fusion
from edgefuse.blocks.gates import GATES, Gate

# Importing the modules registers their fusions.
from edgefuse.blocks.basic import AddFusion, ConcatFusion
from edgefuse.blocks.attention import BasicAttentionFusion
from edgefuse.blocks.se import SEBlock, SEFusion
from edgefuse.blocks.cbam import CBAM, CBAMFusion, ChannelAttention, SpatialAttention
from edgefuse.blocks.non_local import NonLocalBlock, NonLocalFusion
from edgefuse.blocks.cross_modal import CrossModalAttention
from edgefuse.blocks.efficient import EfficientAttention
from edgefuse.blocks.dynamic import DynamicFusion

__all__ = [
    "GATES", "Gate", "create_fusion", "list_fusions", "register_fusion",
    "AddFusion", "ConcatFusion", "BasicAttentionFusion", "SEBlock", "SEFusion",
    "CBAM", "CBAMFusion", "ChannelAttention", "SpatialAttention", "NonLocalBlock",
    "NonLocalFusion", "CrossModalAttention", "EfficientAttention", "DynamicFusion",
]

#: Module types whose parameters form the "attention" parameter group in training (lower LR).
ATTENTION_MODULES = (
    SEBlock, ChannelAttention, SpatialAttention, CBAM, SEFusion, CBAMFusion, EfficientAttention,
    BasicAttentionFusion, NonLocalBlock, CrossModalAttention, DynamicFusion,
)
__all__.append("ATTENTION_MODULES")
