"""Prompt encoder: turns clicks, boxes and mask logits into decoder tokens and a dense map.

Coordinate frame: every point/box coordinate given here is (x, y) in pixels of the square model
input, i.e. in [0, S] with S = `input_image_size`. The predictors rescale user coordinates from
the original frame (x * S / W, y * S / H) before calling this module.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from sam2_video.modeling.position_encoding import PositionEmbeddingRandom
from sam2_video.modeling.transformer import LayerNorm2d

# Point labels understood by the prompt encoder.
LABEL_PAD = -1  # "not a point": fills unused slots
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class PromptEncoder(nn.Module):
    """Embeds sparse prompts (points, box corners) and a dense prompt (low-res mask logits)."""

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        """
        Args:
            embed_dim: channel width of the produced embeddings (the decoder width).
            image_embedding_size: (h, w) of the stride-16 image embedding grid.
            input_image_size: (H, W) of the model input in pixels (S, S).
            mask_in_chans: hidden channels of the mask downscaling convs.
            activation: activation between the mask downscaling convs.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = (int(input_image_size[0]), int(input_image_size[1]))
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # One learned offset per label 0..3 (negative, positive, box top-left, box bottom-right).
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        # Mask prompts come at 4x the embedding resolution and are downscaled by two stride-2 convs.
        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image embedding grid: (1, C, h, w) float32."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """coords (B, N, 2) model-input pixels, labels (B, N) -> (B, N + pad, C)."""
        coords = coords + 0.5  # integer coordinates address pixel corners; use pixel centres
        if pad:
            # The decoder was trained with a padding token whenever no box was given.
            b = coords.shape[0]
            coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], dim=1)  # (B, N+1, 2)
            labels = torch.cat([labels, labels.new_full((b, 1), LABEL_PAD)], dim=1)  # (B, N+1)
        embedding = self.pe_layer.forward_with_coords(coords, self.input_image_size)  # (B, N', C)

        labels = labels.unsqueeze(-1)  # (B, N', 1)
        embedding = torch.where(
            labels == LABEL_PAD,
            self.not_a_point_embed.weight.expand_as(embedding),
            embedding,
        )
        for label, label_embed in enumerate(self.point_embeddings):
            weight = cast(nn.Embedding, label_embed).weight
            embedding = torch.where(labels == label, embedding + weight, embedding)
        return embedding

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """boxes (B, 4) xyxy model-input pixels -> (B, 2, C) corner embeddings."""
        corners = boxes.reshape(-1, 2, 2)  # (B, 2, 2)
        labels = torch.tensor(
            [[LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT]], device=boxes.device
        ).expand(corners.shape[0], -1)  # (B, 2)
        return self._embed_points(corners, labels, pad=False)

    def _embed_masks(self, masks: Tensor) -> Tensor:
        """masks (B, 1, 4h, 4w) logits -> (B, C, h, w)."""
        if tuple(masks.shape[-2:]) != self.mask_input_size or masks.shape[1] != 1:
            raise ValueError(
                f"mask prompt must have shape (B, 1, {self.mask_input_size[0]}, "
                f"{self.mask_input_size[1]}), got {tuple(masks.shape)}"
            )
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None,
        masks: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Embed the prompts of a batch of B objects.

        Args:
            points: (coords (B, N, 2) float, (x, y) in model-input pixels [0, S];
                labels (B, N) int: -1 pad, 0 negative, 1 positive, 2/3 box corners) or None.
                SAM 2 passes boxes as two points labelled 2, 3 placed before the clicks.
            boxes: (B, 4) xyxy in model-input pixels, or None. SAM 2 always passes None,
                in which case a padding point is appended to `points`.
            masks: (B, 1, 4h, 4w) mask logits, or None.

        Returns:
            sparse (B, N', C) point/box tokens (N' = N + 1 pad, or N + 2 with boxes) and
            dense (B, C, h, w) mask embedding (the learned "no mask" vector when masks is None).
        """
        batch_size = _batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        sparse = torch.empty(batch_size, 0, self.embed_dim, device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], 1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)

        if masks is not None:
            dense = self._embed_masks(masks)  # (B, C, h, w)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch_size, -1, h, w)
        return sparse, dense


def _batch_size(
    points: tuple[Tensor, Tensor] | None, boxes: Tensor | None, masks: Tensor | None
) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
