"""Loading Meta's official SAM 2 package from a local checkout, for comparison benchmarks.

The official code is never part of this repository: `SAM2_SRC` names a checkout of
facebookresearch/sam2 (commit 2b90b9f was measured), and it needs hydra-core and iopath
installed (`pip install hydra-core iopath`, or offline from the folder that
bench/fetch_official_wheels.sh fills; they are not dependencies of this project).

The official package imports torchvision for three transforms and box NMS. Where torchvision
cannot be imported (this project's CPU-only torch has no matching torchvision build), a
minimal stand-in is registered instead: `Resize` is the antialiased bilinear
`F.interpolate` that torchvision runs on tensors, `Normalize` / `ToTensor` the usual
arithmetic, and `batched_nms` / `box_area` are this project's torchvision-exact versions
(`sam2_video.utils.mask_utils`), so both implementations pay the same for NMS.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import MICRO_CHECKPOINT
from torch import Tensor, nn

MICRO_CONFIG_JSON = MICRO_CHECKPOINT.parent / "sam2.1_micro.config.json"
OFFICIAL_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


class OfficialUnavailable(RuntimeError):
    """SAM2_SRC is unset or the official package cannot be imported."""


class _Resize(nn.Module):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = [int(size[0]), int(size[1])]

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if unbatched:
            x = x.squeeze(0)
        return x


class _Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean = list(mean)
        self.std = list(std)

    def forward(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


class _ToTensor:
    def __call__(self, pic: Any) -> Tensor:
        if isinstance(pic, Tensor):
            return pic
        import numpy as np

        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
        return t.float().div(255) if t.dtype == torch.uint8 else t.float()


def _install_torchvision_stand_in() -> bool:
    """Register the stand-in `torchvision` modules; False if the real one imports."""
    try:
        import torchvision  # noqa: F401
        from torchvision.ops.boxes import batched_nms as _probe  # noqa: F401

        return False
    except Exception:  # noqa: BLE001 (a CUDA-only build raises RuntimeError on import)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    from sam2_video.utils.mask_utils import batched_nms, box_area

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    boxes.batched_nms = batched_nms
    boxes.box_area = box_area
    ops.boxes = boxes
    ops.batched_nms = batched_nms
    transforms.Resize = _Resize
    transforms.Normalize = _Normalize
    transforms.ToTensor = _ToTensor
    tv.ops = ops
    tv.transforms = transforms
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
            "torchvision.transforms": transforms,
        }
    )
    return True


def import_official() -> dict[str, Any]:
    """Import the official package from `SAM2_SRC`; raises OfficialUnavailable."""
    src = os.environ.get("SAM2_SRC")
    if not src:
        raise OfficialUnavailable(
            "SAM2_SRC is not set: point it at a checkout of facebookresearch/sam2 (commit "
            "2b90b9f measured) and `pip install hydra-core iopath` to compare against it"
        )
    if not (Path(src) / "sam2" / "build_sam.py").is_file():
        raise OfficialUnavailable(f"SAM2_SRC={src} holds no sam2/build_sam.py")
    stand_in = _install_torchvision_stand_in()
    sys.path.insert(0, str(Path(src).resolve()))
    try:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2, build_sam2_video_predictor
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as exc:
        raise OfficialUnavailable(f"cannot import the official sam2 from {src}: {exc}") from exc
    return {
        "build_sam2": build_sam2,
        "build_sam2_video_predictor": build_sam2_video_predictor,
        "SAM2ImagePredictor": SAM2ImagePredictor,
        "SAM2AutomaticMaskGenerator": SAM2AutomaticMaskGenerator,
        "torchvision_stand_in": stand_in,
    }


def micro_overrides() -> list[str]:
    """The hydra overrides that turn the official hiera_t config into the micro model."""
    raw = json.loads(MICRO_CONFIG_JSON.read_text())["micro_overrides"]
    return list(ast.literal_eval(raw)) if isinstance(raw, str) else list(raw)


def fit_feature_sizes(image_predictor: Any, image_size: int) -> Any:
    """The official image predictor hard-codes 1024-input feature sizes; set them for
    `image_size`."""
    image_predictor._bb_feat_sizes = [(image_size // s, image_size // s) for s in (4, 8, 16)]
    return image_predictor


def build_official(
    official: dict[str, Any],
    config: str,
    checkpoint: Path,
    video: bool,
    vos_optimized: bool = False,
    device: str = "cpu",
) -> Any:
    """The official image model or video predictor for `config` (micro or hiera_t)."""
    overrides = micro_overrides() if config == "sam2.1_micro" else []
    if video:
        return official["build_sam2_video_predictor"](
            OFFICIAL_CONFIG,
            str(checkpoint),
            device=device,
            hydra_overrides_extra=overrides,
            vos_optimized=vos_optimized,
        )
    return official["build_sam2"](
        OFFICIAL_CONFIG, str(checkpoint), device=device, hydra_overrides_extra=overrides
    )
