"""The whole SAM 2 network: image encoder, SAM heads, memory encoder and memory attention.

`SAM2Model` only holds the modules (its attribute names are the checkpoint's state-dict keys)
and the network-level steps that every predictor shares:

* `forward_image`: frames -> `ImageFeatures` (stride-16 embedding + high-res maps for the decoder),
* `forward_sam_heads`: features + prompts -> `SamHeadOutput` (masks, IoU, object pointer, score),
* `mask_as_output`: a user mask taken as the answer (SAM 2's "mask input as output" path),
* `encode_memory`: features + predicted mask -> memory tokens for later frames,
* `pointer_temporal_encoding`, `pointer_tokens`: object pointers as memory tokens.

Conditioning a frame on its memories is the `memory_attention` module, called by the tracking
step (`sam2_video.tracking.tracker`), which also decides *which* memories a frame sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_video.config import SAM2Config
from sam2_video.modeling.image_encoder import ImageEncoder, pointwise_conv
from sam2_video.modeling.mask_decoder import MaskDecoder
from sam2_video.modeling.memory_attention import MemoryAttention
from sam2_video.modeling.memory_encoder import MemoryEncoder
from sam2_video.modeling.prompt_encoder import PromptEncoder
from sam2_video.modeling.resize import resize_bilinear
from sam2_video.modeling.transformer import MLP
from sam2_video.precision import Precision

# Logit written into every pixel of an object judged absent (object score <= 0).
NO_OBJECT_LOGIT = -1024.0
# A mask used as the answer becomes logits +10 inside / -10 outside (sigmoid ~ 1 / ~ 0).
MASK_AS_OUTPUT_SCALE = 20.0
MASK_AS_OUTPUT_BIAS = -10.0


@dataclass
class ImageFeatures:
    """Backbone outputs for a batch of frames, in the model input frame (S x S).

    image_embed: (B, C, S/16, S/16) float, stride-16 features (no memory / no_mem_embed yet).
    image_pos: (B, C, S/16, S/16) float, sine position encoding of `image_embed`.
    high_res_features: [(B, C/8, S/4, S/4), (B, C/4, S/8, S/8)], already projected by the mask
        decoder's conv_s0 / conv_s1 (done once per frame, not once per prompt).
    """

    image_embed: Tensor
    image_pos: Tensor
    high_res_features: list[Tensor]

    def select(self, index: Tensor | slice | int) -> ImageFeatures:
        """Features of a subset of the batch (e.g. `expand_to(n)` then per-object rows)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures(
            self.image_embed[index],
            self.image_pos[index],
            [f[index] for f in self.high_res_features],
        )

    def expand_to(self, batch: int) -> ImageFeatures:
        """Repeat a single frame's features `batch` times (a view, no copy)."""
        return ImageFeatures(
            self.image_embed.expand(batch, -1, -1, -1),
            self.image_pos.expand(batch, -1, -1, -1),
            [f.expand(batch, -1, -1, -1) for f in self.high_res_features],
        )


@dataclass
class SamHeadOutput:
    """Decoder outputs for B prompts / objects, S = model input size.

    low_res_multimasks: (B, M, S/4, S/4) logits of every returned token (M = 1 or 3).
    ious: (B, M) predicted IoU per returned token.
    low_res_masks: (B, 1, S/4, S/4) logits of the chosen token (best IoU when M = 3).
    high_res_masks: (B, 1, S, S) bilinear upsampling of `low_res_masks`.
    obj_ptr: (B, C) object pointer (the fixed `no_obj_ptr` where the object is absent).
    object_score_logits: (B, 1) > 0 means the object is present.
    """

    low_res_multimasks: Tensor
    ious: Tensor
    low_res_masks: Tensor
    high_res_masks: Tensor
    obj_ptr: Tensor
    object_score_logits: Tensor


def temporal_sine_encoding(positions: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """1D sine/cosine encoding of (normalised) temporal positions.

    positions: (N,) float; returns (N, dim) as [sin(p / t_k) for k] + [cos(p / t_k) for k].
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * (k // 2) / half)  # (half,)
    angles = positions.float().unsqueeze(-1) / freqs  # (N, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SAM2Model(nn.Module):
    """SAM 2 / SAM 2.1 network with the official module names (checkpoint-compatible)."""

    def __init__(
        self,
        *,
        config: SAM2Config,
        image_encoder: ImageEncoder,
        sam_prompt_encoder: PromptEncoder,
        sam_mask_decoder: MaskDecoder,
        memory_encoder: MemoryEncoder,
        memory_attention: MemoryAttention,
    ) -> None:
        super().__init__()
        self.config = config
        hidden, mem = config.hidden_dim, config.mem_dim
        self.image_size = config.image_size
        # Mixed precision the predictors run this model under (`sam2_video.precision`);
        # `build_sam2(precision=...)` sets it, fp32 otherwise.
        self.precision = Precision.FP32
        self.hidden_dim = hidden
        self.mem_dim = mem
        self.num_maskmem = config.num_maskmem

        self.image_encoder = image_encoder
        self.sam_prompt_encoder = sam_prompt_encoder
        self.sam_mask_decoder = sam_mask_decoder
        self.memory_encoder = memory_encoder
        self.memory_attention = memory_attention

        # Temporal encoding of memory slots: index num_maskmem-1 is used by conditioning frames.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, mem))
        # Added to a frame's features when it is segmented with no memory at all.
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        # Pointer used (instead of the decoder's) when the object is judged absent.
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        self.obj_ptr_proj = MLP(
            input_dim=hidden, hidden_dim=hidden, output_dim=hidden, num_layers=3
        )
        # Turns a user mask (S x S, values in [0, 1]) into decoder-scale low-res logits.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        if config.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj: nn.Module = nn.Linear(hidden, mem)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()
        if config.no_obj_embed_spatial:
            # SAM 2.1: marks memories of frames where the object was absent.
            self.no_obj_embed_spatial: nn.Parameter | None = nn.Parameter(torch.zeros(1, mem))
        else:
            self.no_obj_embed_spatial = None

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    # ------------------------------------------------------------------ image features
    def forward_image(self, images: Tensor) -> ImageFeatures:
        """images: (B, 3, S, S) float, normalised RGB in the model input frame."""
        backbone = self.image_encoder(images)
        fpn = backbone.backbone_fpn  # highest resolution first, 3 levels
        high_res = [
            pointwise_conv(self.sam_mask_decoder.conv_s0, fpn[0]),
            pointwise_conv(self.sam_mask_decoder.conv_s1, fpn[1]),
        ]
        return ImageFeatures(
            image_embed=fpn[-1], image_pos=backbone.vision_pos_enc[-1], high_res_features=high_res
        )

    # ------------------------------------------------------------------ SAM heads
    def forward_sam_heads(
        self,
        image_embed: Tensor,
        high_res_features: list[Tensor],
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        multimask_output: bool = False,
    ) -> SamHeadOutput:
        """Run the prompt encoder and mask decoder on B (object, frame) rows.

        image_embed: (B, C, S/16, S/16) features (memory-conditioned or + no_mem_embed).
        point_coords: (B, P, 2) float, (x, y) in model-input pixels [0, S]; point_labels (B, P)
            int32 (1 pos, 0 neg, 2/3 box corners, -1 padding). None -> a single padding point.
        mask_inputs: (B, 1, h, w) mask logits/probabilities; resized (antialiased) to S/4 when
            its size differs.
        """
        batch = image_embed.shape[0]
        device = image_embed.device
        if point_coords is None:
            point_coords = torch.zeros(batch, 1, 2, device=device)
            point_labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
        mask_prompt = None
        if mask_inputs is not None:
            low_res_size = self.sam_prompt_encoder.mask_input_size
            if tuple(mask_inputs.shape[-2:]) != tuple(low_res_size):
                mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=low_res_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
            else:
                mask_prompt = mask_inputs
        sparse, dense = self.sam_prompt_encoder(
            points=(point_coords, point_labels), boxes=None, masks=mask_prompt
        )
        multimasks, ious, tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        present = object_score_logits > 0  # (B, 1)
        # An absent object gets an all-background mask, so its memory says "nothing here".
        multimasks = torch.where(present[:, :, None, None], multimasks, NO_OBJECT_LOGIT).float()

        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)  # (B,)
            rows = torch.arange(batch, device=device)
            low_res = multimasks[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low_res = multimasks
        high_res = resize_bilinear(low_res, (self.image_size, self.image_size))
        obj_ptr = self._pointer_with_presence(self.obj_ptr_proj(token), present.float())
        return SamHeadOutput(multimasks, ious, low_res, high_res, obj_ptr, object_score_logits)

    def _pointer_with_presence(self, obj_ptr: Tensor, present: Tensor) -> Tensor:
        """obj_ptr (B, C), present (B, 1) float in {0, 1} -> pointer or the fixed no-object one."""
        return present * obj_ptr + (1 - present) * self.no_obj_ptr

    def mask_as_output(
        self, image_embed: Tensor, high_res_features: list[Tensor], masks: Tensor
    ) -> SamHeadOutput:
        """Take a user mask as the answer without asking the decoder for a mask.

        masks: (B, 1, S, S) float/bool in the model input frame. The decoder still runs on the
        downsampled mask alone, only to produce the object pointer.
        """
        masks = masks.float()
        high_res = masks * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        low_res = F.interpolate(
            high_res,
            size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ious = masks.new_ones(masks.shape[0], 1)
        decoded = self.forward_sam_heads(
            image_embed, high_res_features, mask_inputs=self.mask_downsample(masks)
        )
        # Presence comes from the user's mask (any pixel set), not from the decoder's score.
        present = (masks.flatten(1) > 0).any(dim=1, keepdim=True).float()  # (B, 1)
        obj_ptr = self._pointer_with_presence(decoded.obj_ptr, present)
        score = MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS
        return SamHeadOutput(low_res, ious, low_res, high_res, obj_ptr, score)

    # ------------------------------------------------------------------ memory
    def encode_memory(
        self,
        image_embed: Tensor,
        high_res_masks: Tensor,
        object_score_logits: Tensor,
        binarize: bool,
    ) -> tuple[Tensor, Tensor]:
        """Encode a frame and its predicted mask into memory for later frames.

        image_embed: (B, C, h, w) raw stride-16 features of the frame (before memory attention),
            or (1, C, h, w) shared by all B masks of one frame.
        high_res_masks: (B, 1, S, S) logits. `binarize`: threshold at 0 instead of sigmoid (used
            for frames whose mask came from user prompts).
        Returns (features (B, mem_dim, h, w), pos_enc (B, mem_dim, h, w)), float32.
        """
        if binarize:
            mask = (high_res_masks > 0).float()
        else:
            mask = torch.sigmoid(high_res_masks)
        mask = mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(image_embed, mask, skip_mask_sigmoid=True)
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).float()  # (B, 1)
            features = (
                features + absent[:, :, None, None] * self.no_obj_embed_spatial[:, :, None, None]
            )
        return features, pos

    def pointer_temporal_encoding(self, offsets: Tensor, max_ptrs: int | Tensor) -> Tensor:
        """Temporal encoding of object pointers `offsets` frames away (N,) -> (N, mem_dim).

        max_ptrs: the pointer window; offsets are divided by max_ptrs - 1. A (N,) tensor gives
        each pointer its own window (objects of one batch that have seen different histories).
        """
        if not self.config.add_tpos_enc_to_obj_ptrs:
            return offsets.new_zeros(offsets.shape[0], self.mem_dim, dtype=torch.float32)
        dim = self.hidden_dim if self.config.proj_tpos_enc_in_obj_ptrs else self.mem_dim
        if isinstance(max_ptrs, Tensor):
            positions = offsets.float() / (max_ptrs - 1).clamp(min=1).float()
        else:
            positions = offsets.float() / max(max_ptrs - 1, 1)
        encoding = temporal_sine_encoding(positions, dim)
        return self.obj_ptr_tpos_proj(encoding)

    def pointer_tokens(self, obj_ptrs: Tensor) -> Tensor:
        """Split (B, N, C) pointers into (B, N * C/mem_dim, mem_dim) memory tokens."""
        batch, num, _ = obj_ptrs.shape
        split = self.hidden_dim // self.mem_dim
        return obj_ptrs.reshape(batch, num * split, self.mem_dim)
