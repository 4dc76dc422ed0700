"""The SAM 2 network, one component per file; `sam2.SAM2Model` puts them together.

Attribute names are the official checkpoint's state-dict keys. Nothing outside `sam2_video`
imports from here: the service sees predictors and typed results.
"""

from sam2_video.modeling.hiera import Hiera
from sam2_video.modeling.image_encoder import FpnNeck, ImageEncoder
from sam2_video.modeling.mask_decoder import MaskDecoder
from sam2_video.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2_video.modeling.memory_encoder import MemoryEncoder
from sam2_video.modeling.position_encoding import PositionEmbeddingRandom, PositionEmbeddingSine
from sam2_video.modeling.prompt_encoder import PromptEncoder
from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model, SamHeadOutput
from sam2_video.modeling.transformer import TwoWayTransformer

__all__ = [
    "FpnNeck",
    "Hiera",
    "ImageEncoder",
    "ImageFeatures",
    "MaskDecoder",
    "MemoryAttention",
    "MemoryAttentionLayer",
    "MemoryEncoder",
    "PositionEmbeddingRandom",
    "PositionEmbeddingSine",
    "PromptEncoder",
    "SAM2Model",
    "SamHeadOutput",
    "TwoWayTransformer",
]
