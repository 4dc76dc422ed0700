"""The per-frame tracking step shared by the streaming session and the offline predictor.

`FrameTracker` wraps a `SAM2Model` and knows how to
* track a batch of objects on a frame in one forward (`track`), each attending to its own
  memory (memory banks of different lengths are padded and masked),
* answer a prompt (points / box / mask) for one object on a frame (`prompt_points`,
  `prompt_mask`),
* encode the memory of prompted frames (`encode_prompted`).
It holds no per-video state: that lives in `ObjectMemory` objects owned by the callers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sam2_video.memory_bank import FrameOutput, MemorySelection, ObjectMemory
from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model, SamHeadOutput
from sam2_video.postprocess import fill_holes

# Low-res logits fed back as a mask prompt are clamped as in the official predictor.
PREV_LOGITS_CLAMP = 32.0


@dataclass(frozen=True)
class TrackerOptions:
    """Behaviour switches of the tracking step (defaults = official video predictor).

    fill_hole_area: fill background holes up to this many low-res pixels in every output (the
        official video builder sets 8; its references were made with 0).
    multimask_max_points: prompts with at most this many points (a box counts 2) pick the best
        of 3 candidate masks; tracking (0 points) always does.
    """

    fill_hole_area: int = 0
    multimask_max_points: int = 1


class FrameTracker:
    """Stateless tracking step over a `SAM2Model` (composition, not inheritance)."""

    def __init__(self, model: SAM2Model, options: TrackerOptions | None = None) -> None:
        self.model = model
        self.options = options or TrackerOptions()
        self._maskmem_pos: Tensor | None = None  # (HW, mem_dim), the same for every memory

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ------------------------------------------------------------------ tracking
    def track(
        self,
        features: ImageFeatures,
        objects: list[ObjectMemory],
        frame_idx: int,
        reverse: bool,
        num_frames: int | None,
    ) -> list[FrameOutput]:
        """Track `objects` on a frame from their memories (one batched forward).

        features: the frame's `ImageFeatures` with batch 1. Returns one `FrameOutput` per object
        (memory encoded), in order; the caller stores them.
        """
        if not objects:
            return []
        batch = len(objects)
        feats = features.expand_to(batch)
        max_ptrs = self.max_pointers(num_frames)
        selections = [
            obj.select(frame_idx, reverse, self.model.num_maskmem, max_ptrs, num_frames)
            for obj in objects
        ]
        pix_feat = self._attend(feats, selections, max_ptrs)
        heads = self.model.forward_sam_heads(
            pix_feat, feats.high_res_features, multimask_output=True
        )
        maskmem, _ = self.model.encode_memory(
            feats.image_embed, heads.high_res_masks, heads.object_score_logits, binarize=False
        )
        return self._split_outputs(heads, maskmem.to(torch.bfloat16), from_prompt=False)

    def max_pointers(self, num_frames: int | None) -> int:
        limit = self.model.config.max_obj_ptrs_in_encoder
        return limit if num_frames is None else min(num_frames, limit)

    def _attend(
        self, feats: ImageFeatures, selections: list[MemorySelection], max_ptrs: int
    ) -> Tensor:
        """Memory-conditioned features (B, C, h, w) for B objects with their own memories."""
        model = self.model
        batch, channels, h, w = feats.image_embed.shape
        hw, mem_dim = h * w, model.mem_dim
        split = model.hidden_dim // mem_dim  # memory tokens per object pointer
        num_slots = max(len(s.spatial) for s in selections)
        num_ptr_tokens = max(len(s.pointers) for s in selections) * split
        maskmem_pos = self._memory_pos_encoding(h, w)  # (HW, mem_dim)
        tpos = model.maskmem_tpos_enc.view(model.num_maskmem, mem_dim)

        memory = feats.image_embed.new_zeros(batch, num_slots * hw + num_ptr_tokens, mem_dim)
        memory_pos = torch.zeros_like(memory)
        padding = torch.ones(batch, memory.shape[1], dtype=torch.bool, device=memory.device)
        for row, selection in enumerate(selections):
            for i, (slot, out) in enumerate(selection.spatial):
                span = slice(i * hw, (i + 1) * hw)
                memory[row, span] = out.maskmem.flatten(1).t().float()  # (HW, mem_dim)
                memory_pos[row, span] = maskmem_pos + tpos[slot]
                padding[row, span] = False
            if selection.pointers:
                offsets = torch.tensor([o for o, _ in selection.pointers], device=memory.device)
                ptrs = torch.stack([out.obj_ptr for _, out in selection.pointers])  # (N, C)
                tokens = model.pointer_tokens(ptrs[None])[0]  # (N * split, mem_dim)
                pos = model.pointer_temporal_encoding(offsets, max_ptrs)  # (N, mem_dim)
                start = num_slots * hw
                span = slice(start, start + tokens.shape[0])
                memory[row, span] = tokens
                memory_pos[row, span] = pos.repeat_interleave(split, dim=0)
                padding[row, span] = False
        curr = feats.image_embed.flatten(2).transpose(1, 2)  # (B, HW, C)
        curr_pos = feats.image_pos.flatten(2).transpose(1, 2)  # (B, HW, C)
        needs_mask = bool(padding.any())
        out = model.memory_attention(
            curr,
            memory,
            curr_pos,
            memory_pos,
            num_obj_ptr_tokens=num_ptr_tokens,
            memory_key_padding_mask=padding if needs_mask else None,
        )  # (B, HW, C)
        return out.transpose(1, 2).reshape(batch, channels, h, w)

    def _memory_pos_encoding(self, h: int, w: int) -> Tensor:
        """Spatial position encoding of memory tokens (HW, mem_dim): a constant of the model."""
        if self._maskmem_pos is None or self._maskmem_pos.shape[0] != h * w:
            probe = torch.zeros(1, self.model.mem_dim, h, w, device=self.device)
            pos = self.model.memory_encoder.position_encoding(probe)  # (1, mem_dim, h, w)
            self._maskmem_pos = pos[0].flatten(1).t().contiguous()
        return self._maskmem_pos

    # ------------------------------------------------------------------ prompts
    def prompt_points(
        self,
        features: ImageFeatures,
        obj: ObjectMemory,
        frame_idx: int,
        coords: Tensor,
        labels: Tensor,
        num_frames: int | None,
    ) -> tuple[FrameOutput, bool]:
        """Answer points (model-input pixels) for one object on a frame.

        coords (1, P, 2) float32, labels (1, P) int32, already merged with earlier points on the
        frame when the caller keeps them. Returns (output without memory, is_conditioning).
        A frame the object was not tracked on becomes a conditioning frame (no memory used);
        on a tracked frame the prompt corrects the tracked result, seeing its memory.
        """
        is_init = frame_idx not in obj.frames_tracked
        previous = obj.output_at(frame_idx)
        mask_prompt = None
        if previous is not None:
            mask_prompt = previous.low_res_logits[None].clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
        if is_init:
            pix_feat = features.image_embed + self.model.no_mem_embed.view(1, -1, 1, 1)
        else:
            reverse = obj.frames_tracked[frame_idx]
            max_ptrs = self.max_pointers(num_frames)
            selection = obj.select(frame_idx, reverse, self.model.num_maskmem, max_ptrs, num_frames)
            pix_feat = self._attend(features, [selection], max_ptrs)
        num_points = coords.shape[1]
        multimask = num_points <= self.options.multimask_max_points
        heads = self.model.forward_sam_heads(
            pix_feat,
            features.high_res_features,
            point_coords=coords,
            point_labels=labels,
            mask_inputs=mask_prompt,
            multimask_output=multimask,
        )
        return self._split_outputs(heads, None, from_prompt=True)[0], is_init

    def prompt_mask(
        self, features: ImageFeatures, obj: ObjectMemory, frame_idx: int, mask: Tensor
    ) -> tuple[FrameOutput, bool]:
        """Take a user mask (1, 1, S, S) float {0, 1} in the model frame as the object's answer."""
        is_init = frame_idx not in obj.frames_tracked
        heads = self.model.mask_as_output(features.image_embed, features.high_res_features, mask)
        return self._split_outputs(heads, None, from_prompt=True)[0], is_init

    def encode_prompted(self, features: ImageFeatures, outputs: list[FrameOutput]) -> None:
        """Fill in the memory of prompted outputs on one frame (in place, batched).

        As the official predictor, memory comes from the stored low-res logits upsampled and
        binarised, so a prompt's memory matches the mask the user saw.
        """
        if not outputs:
            return
        low_res = torch.stack([out.low_res_logits for out in outputs])  # (B, 1, S/4, S/4)
        size = (self.image_size, self.image_size)
        high_res = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
        scores = torch.stack([out.object_score for out in outputs])  # (B, 1)
        feats = features.expand_to(len(outputs))
        maskmem, _ = self.model.encode_memory(feats.image_embed, high_res, scores, binarize=True)
        for out, mem in zip(outputs, maskmem.to(torch.bfloat16)):
            out.maskmem = mem

    # ------------------------------------------------------------------ helpers
    def _split_outputs(
        self, heads: SamHeadOutput, maskmem: Tensor | None, from_prompt: bool
    ) -> list[FrameOutput]:
        low_res = heads.low_res_masks
        if self.options.fill_hole_area > 0:
            low_res = fill_holes(low_res, self.options.fill_hole_area)
        outputs = []
        for i in range(low_res.shape[0]):
            outputs.append(
                FrameOutput(
                    low_res_logits=low_res[i],
                    obj_ptr=heads.obj_ptr[i],
                    object_score=heads.object_score_logits[i],
                    maskmem=None if maskmem is None else maskmem[i],
                    ious=heads.ious[i],
                    from_prompt=from_prompt,
                )
            )
        return outputs

    def upsample(self, outputs: list[FrameOutput | None], hw: tuple[int, int]) -> Tensor:
        """Low-res logits of objects -> (N, H, W) logits at frame size; None -> -1024 (absent)."""
        low = self.image_size // 4
        stacked = torch.stack(
            [
                out.low_res_logits if out is not None
                else torch.full((1, low, low), -1024.0, device=self.device)
                for out in outputs
            ]
        )  # (N, 1, S/4, S/4)
        return F.interpolate(stacked, size=hw, mode="bilinear", align_corners=False)[:, 0]
