"""Input checks and preprocessing shared by the image and video predictors (torch only)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# ImageNet statistics the Hiera trunk was trained with.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def validate_image(image: object) -> None:
    """Raise ValueError unless `image` is an HxWx3 uint8 RGB numpy array with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape HxWx3 (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")


def validate_frame_tensor(frame: Tensor) -> None:
    """Raise ValueError unless `frame` is a (3, H, W) or (H, W, 3) uint8/float tensor."""
    if frame.ndim != 3 or 3 not in (frame.shape[0], frame.shape[-1]):
        raise ValueError(f"frame tensor must be (3, H, W) or (H, W, 3), got {tuple(frame.shape)}")
    if frame.dtype not in (torch.uint8, torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"frame tensor must be uint8 or float, got {frame.dtype}")
    if frame.numel() == 0:
        raise ValueError(f"frame tensor is empty: shape {tuple(frame.shape)}")


def to_chw_float(image: np.ndarray | Tensor, device: torch.device | str) -> Tensor:
    """HxWx3 uint8 (numpy or tensor) or 3xHxW tensor -> (3, H, W) float32 in [0, 1] on device.

    A float tensor is taken as already scaled to [0, 1].
    """
    if isinstance(image, Tensor):
        validate_frame_tensor(image)
        tensor = image.to(device)
    else:
        validate_image(image)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    if tensor.shape[-1] == 3 and tensor.shape[0] != 3:
        tensor = tensor.permute(2, 0, 1)  # (3, H, W)
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    return tensor.float()


def preprocess(image: np.ndarray | Tensor, size: int, device: torch.device | str) -> Tensor:
    """Frame -> model input (1, 3, size, size): resize (bilinear, antialiased) and normalise.

    Aspect ratio is not kept (as in SAM 2): the frame is stretched to a square. The official
    video loader resizes with PIL bicubic on uint8 instead; the two differ by about one grey
    level per pixel, which moves mask logits slightly but not the masks' shapes.
    """
    chw = to_chw_float(image, device)
    if tuple(chw.shape[-2:]) != (size, size):
        chw = F.interpolate(
            chw[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    mean = torch.tensor(PIXEL_MEAN, device=chw.device).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=chw.device).view(3, 1, 1)
    return ((chw - mean) / std)[None]


def normalize_uint8_frames(frames: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """(T, S, S, 3) uint8 frames already at model size -> (T, 3, S, S) normalised float32.

    Matches the official loader bit for bit: float32(u8 / 255 computed in float64), then
    (x - mean) / std in float32.
    """
    scaled = torch.from_numpy((frames / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return ((scaled - mean) / std).to(device)


def scale_points(coords: Tensor, orig_hw: tuple[int, int], size: int) -> Tensor:
    """Pixel (x, y) in an orig_hw (H, W) frame -> model-input pixels in [0, size]."""
    h, w = orig_hw
    # Divide first, then scale: the official order, so grid points match it bit for bit.
    wh = torch.tensor([w, h], dtype=coords.dtype, device=coords.device)
    return coords / wh * size
