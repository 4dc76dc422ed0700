"""Promptable segmentation of single images (the official `SAM2ImagePredictor` API)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sam2_video.modeling.resize import resize_bilinear
from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
from sam2_video.precision import inference_method
from sam2_video.utils.transforms import preprocess, scale_points

# Low-res logits handed back for re-use as a mask prompt are clamped like the official ones.
LOW_RES_LOGIT_CLAMP = 32.0


class ImageNotSetError(RuntimeError):
    """predict() was called before set_image()."""


class SAM2ImagePredictor:
    """Embeds an image once, then answers point / box / mask prompts on it.

    Wraps a `SAM2Model` (composition): the model is shared, the predictor owns only the
    current image's features.
    """

    def __init__(self, model: SAM2Model, mask_threshold: float = 0.0) -> None:
        self.model = model
        self.mask_threshold = mask_threshold
        self._features: ImageFeatures | None = None
        self._orig_hw: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image given to `set_image`."""
        if self._orig_hw is None:
            raise ImageNotSetError("no image set: call set_image(image) first")
        return self._orig_hw

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    def reset_predictor(self) -> None:
        """Forget the current image."""
        self._features = None
        self._orig_hw = None

    @inference_method
    def set_image(self, image: np.ndarray) -> None:
        """Compute the embedding of `image`: HxWx3 uint8 RGB numpy array of any size."""
        self.reset_predictor()
        model_input = preprocess(image, self.model.image_size, self.device)  # (1, 3, S, S)
        self.set_features(self.model.forward_image(model_input), (image.shape[0], image.shape[1]))

    @inference_method
    def set_features(self, features: ImageFeatures, orig_hw: tuple[int, int]) -> None:
        """Use backbone features computed elsewhere for an image instead of embedding it.

        features: `model.forward_image` output for one image (batch 1), as a video frame's
            (not modified). orig_hw: (H, W) of that image in pixels.
        """
        if features.image_embed.shape[0] != 1:
            raise ValueError(
                f"features must be of one image, got batch {features.image_embed.shape[0]}"
            )
        # Image-only segmentation has no memory: SAM 2 marks that with `no_mem_embed`.
        no_mem = self.model.no_mem_embed.view(1, -1, 1, 1)
        self._features = ImageFeatures(
            features.image_embed + no_mem, features.image_pos, list(features.high_res_features)
        )
        self._orig_hw = (int(orig_hw[0]), int(orig_hw[1]))

    def get_image_embedding(self) -> Tensor:
        """(1, C, S/16, S/16) embedding of the current image (no_mem_embed included)."""
        if self._features is None:
            raise ImageNotSetError("no image set: call set_image(image) first")
        return self._features.image_embed

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set on the current image.

        point_coords: (N, 2) float, (x, y) pixels of the original image (model-input pixels
            in [0, S] when normalize_coords=False); point_labels: (N,) 1 positive / 0 negative.
            (B, N, 2) / (B, N) ask for B independent prompt sets at once.
        box: (4,) xyxy pixels. mask_input: (1, S/4, S/4) low-res logits from a previous call.
        Returns masks (C, H, W) bool (float logits if return_logits), iou (C,), low-res logits
        (C, S/4, S/4) clamped to +-32; C = 3 with multimask_output else 1. Batched prompts add a
        leading B dimension to each.
        """
        if self._orig_hw is None:
            raise ImageNotSetError("no image set: call set_image(image) first")
        size = self.model.image_size
        frame_hw = self._orig_hw if normalize_coords else (size, size)
        coords, labels = self._check_points(point_coords, point_labels, frame_hw)
        boxes = self._check_box(box, frame_hw)
        masks_in = self._check_mask_input(mask_input)
        batched = coords is not None and coords.ndim == 3 and coords.shape[0] > 1
        if coords is not None and labels is not None and coords.ndim == 2:
            coords, labels = coords[None], labels[None]
        if masks_in is not None and masks_in.ndim == 3:
            masks_in = masks_in[None]
        masks, ious, low_res = self.predict_torch(
            coords, labels, boxes, masks_in, multimask_output, return_logits, normalize_coords
        )
        if not batched:
            masks, ious, low_res = masks[0], ious[0], low_res[0]
        return masks.cpu().numpy(), ious.float().cpu().numpy(), low_res.float().cpu().numpy()

    @inference_method
    def predict_torch(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Batched prediction: B prompt sets on the current image.

        point_coords: (B, N, 2) float pixels (see `predict`), point_labels (B, N) int.
        boxes: (B, 4) xyxy. mask_input: (B, 1, S/4, S/4) logits.
        Returns masks (B, C, H, W), ious (B, C), low-res logits (B, C, S/4, S/4).
        """
        low_res, ious = self.predict_low_res_torch(
            point_coords, point_labels, boxes, mask_input, multimask_output, normalize_coords
        )
        masks = self.upscale_logits(low_res)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, ious, low_res.clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)

    def upscale_logits(self, low_res: Tensor) -> Tensor:
        """(B, C, S/4, S/4) float low-res logits -> (B, C, H, W) logits at the image size.

        Bilinear resizing treats each (b, c) plane alone, so resizing a subset of the masks
        gives the same values as resizing all of them and selecting afterwards.
        """
        return resize_bilinear(low_res, self.original_size)

    @inference_method
    def predict_low_res_torch(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
        multimask_output: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """`predict_torch` without the upscaling: (B, C, S/4, S/4) float32 unclamped
        low-res logits and (B, C) predicted IoUs (for callers that filter masks first)."""
        if self._features is None or self._orig_hw is None:
            raise ImageNotSetError("no image set: call set_image(image) first")
        size = self.model.image_size
        coords, labels = None, None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_coords and point_labels must be given together")
            coords = point_coords.to(self.device, torch.float32)
            labels = point_labels.to(self.device, torch.int32)
            if normalize_coords:
                coords = scale_points(coords, self._orig_hw, size)
        if boxes is not None:
            corners = boxes.to(self.device, torch.float32).reshape(-1, 2, 2)
            if normalize_coords:
                corners = scale_points(corners, self._orig_hw, size)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=self.device)
            corner_labels = corner_labels.expand(corners.shape[0], 2)
            # SAM 2 feeds a box as two labelled points placed before the clicks.
            if coords is None or labels is None:
                coords, labels = corners, corner_labels
            else:
                coords = torch.cat([corners, coords], dim=1)
                labels = torch.cat([corner_labels, labels], dim=1)
        batch = 1
        for prompt in (coords, mask_input):
            if prompt is not None:
                batch = max(batch, prompt.shape[0])
        if mask_input is not None:
            mask_input = mask_input.to(self.device, torch.float32)

        features = self._features.expand_to(batch)
        # Unlike video tracking, a mask-only prompt here has no sparse tokens at all.
        points = None if coords is None else (coords, labels)
        sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
        low_res, ious, _, _ = self.model.sam_mask_decoder(
            image_embeddings=features.image_embed,
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=features.high_res_features,
        )
        return low_res.float(), ious

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_points(
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        frame_hw: tuple[int, int],
    ) -> tuple[Tensor | None, Tensor | None]:
        if point_coords is None and point_labels is None:
            return None, None
        if point_coords is None or point_labels is None:
            raise ValueError("point_coords and point_labels must be given together")
        coords = np.asarray(point_coords, dtype=np.float32)
        labels = np.asarray(point_labels)
        if coords.ndim not in (2, 3) or coords.shape[-1] != 2 or 0 in coords.shape:
            raise ValueError(
                f"point_coords must have shape (N, 2) or (B, N, 2) with N >= 1, got {coords.shape}"
            )
        if labels.shape != coords.shape[:-1]:
            raise ValueError(
                f"point_labels must have shape {coords.shape[:-1]} to match point_coords, "
                f"got {labels.shape}"
            )
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("point_labels must be 1 (positive) or 0 (negative)")
        _check_in_frame(coords.reshape(-1, 2), frame_hw, "point_coords")
        return torch.from_numpy(coords), torch.from_numpy(labels.astype(np.int32))

    @staticmethod
    def _check_box(box: np.ndarray | None, frame_hw: tuple[int, int]) -> Tensor | None:
        if box is None:
            return None
        arr = np.asarray(box, dtype=np.float32).reshape(-1)
        if arr.shape != (4,):
            raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {np.shape(box)}")
        if arr[2] < arr[0] or arr[3] < arr[1]:
            raise ValueError(f"box must be x0 <= x1 and y0 <= y1, got {arr.tolist()}")
        _check_in_frame(arr.reshape(2, 2), frame_hw, "box")
        return torch.from_numpy(arr)[None]

    def _check_mask_input(self, mask_input: np.ndarray | None) -> Tensor | None:
        if mask_input is None:
            return None
        arr = np.asarray(mask_input, dtype=np.float32)
        low = self.model.image_size // 4
        if arr.shape not in ((1, low, low), (1, 1, low, low)):
            raise ValueError(
                f"mask_input must be low-res logits of shape (1, {low}, {low}), got {arr.shape}"
            )
        return torch.from_numpy(arr)


def _check_in_frame(xy: np.ndarray, frame_hw: tuple[int, int], what: str) -> None:
    """xy: (N, 2) pixel (x, y); each must lie inside the (H, W) frame, edges included."""
    h, w = frame_hw
    if not np.isfinite(xy).all():
        raise ValueError(f"{what} must be finite numbers")
    if (xy[:, 0] < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] < 0).any() or (xy[:, 1] > h).any():
        raise ValueError(f"{what} {xy.tolist()} lies outside the {w}x{h} frame")
