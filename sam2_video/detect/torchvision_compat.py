"""Make `import torchvision` work where its compiled ops cannot load beside this torch.

transformers' image processors and Ultralytics import torchvision. A torchvision wheel built
for another torch build (PyPI's CUDA wheel next to a CPU-only torch, the usual mix-up) cannot
load its C++ ops, and its Python package then fails at import with "operator torchvision::nms
does not exist". Where that happens, this module defines `torchvision::nms` (and `qnms`) in
plain torch, with torchvision's exact semantics (`sam2_video.utils.mask_utils.nms`), and
imports the Python package again. Elsewhere it does nothing.
"""

from __future__ import annotations

import importlib
import logging
import sys

import torch

logger = logging.getLogger(__name__)

_library: torch.library.Library | None = None  # kept alive: the ops live as long as it does


def _nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    from sam2_video.utils.mask_utils import nms

    return nms(dets, scores, iou_threshold)


def _define_nms_ops() -> None:
    global _library
    if _library is not None:
        return
    _library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (owned for life)
    for name in ("nms", "qnms"):
        _library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library.impl(name, _nms, "CompositeExplicitAutograd")


def ensure_torchvision_importable() -> bool:
    """Import torchvision, standing in for its NMS ops if its compiled ops cannot load.

    Returns False when torchvision is not installed (nothing to fix), True once it imports.
    Raises whatever the second import raises when the stand-in is not enough.
    """
    try:
        importlib.import_module("torchvision")
        return True
    except ModuleNotFoundError:
        return False
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        logger.warning(
            "torchvision's compiled ops do not load beside torch %s (%s); using plain-torch "
            "NMS in their place",
            torch.__version__,
            exc,
        )
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _define_nms_ops()
    torchvision = importlib.import_module("torchvision")
    boxes = importlib.import_module("torchvision.ops.boxes")
    # torchvision.ops.nms checks that the compiled library loaded; the op it calls is ours.
    boxes._assert_has_ops = lambda: None  # type: ignore[attr-defined]
    return torchvision is not None
