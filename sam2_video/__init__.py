"""SAM 2 / SAM 2.1 in pure PyTorch: the model, image predictor and mask generator.

The main entry points import lazily (`from sam2_video import build_sam2, StreamingSession`),
so `import sam2_video` stays cheap and submodules can import each other without cycles.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "build_sam2": "sam2_video.build",
    "SAM2ImagePredictor": "sam2_video.predictors.image",
    "SAM2AutomaticMaskGenerator": "sam2_video.predictors.amg",
    "SAM2VideoPredictor": "sam2_video.predictors.video",
    "StreamingSession": "sam2_video.predictors.streaming",
    "SessionOptions": "sam2_video.predictors.stream_types",
    "FrameResult": "sam2_video.predictors.stream_types",
    # The network and its per-frame features, for type hints outside the library (the
    # service holds models but never calls into modeling/ itself).
    "SAM2Model": "sam2_video.modeling.sam2",
    "ImageFeatures": "sam2_video.modeling.sam2",
    "auto_annotate": "sam2_video.annotate",
}

__all__ = [
    "FrameResult",
    "ImageFeatures",
    "SAM2AutomaticMaskGenerator",
    "SAM2Model",
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "SessionOptions",
    "StreamingSession",
    "auto_annotate",
    "build_sam2",
]

if TYPE_CHECKING:
    from sam2_video.annotate import auto_annotate
    from sam2_video.build import build_sam2
    from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
    from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
    from sam2_video.predictors.image import SAM2ImagePredictor
    from sam2_video.predictors.stream_types import FrameResult, SessionOptions
    from sam2_video.predictors.streaming import StreamingSession
    from sam2_video.predictors.video import SAM2VideoPredictor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sam2_video' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
