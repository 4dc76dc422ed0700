"""The per-frame tracking step shared by the streaming session and the offline predictor.

`FrameTracker` wraps a `SAM2Model` and knows how to
* track a batch of objects on a frame in one forward (`track`), each attending to its own
  memory (memory banks of different lengths are padded and masked),
* answer a prompt (points / box / mask) for one object on a frame (`prompt_points`,
  `prompt_mask`),
* encode the memory of prompted frames (`encode_prompted`).
It holds no per-video state: that lives in `ObjectMemory` objects owned by the callers.

With `static_shapes` the tracker feeds the network fixed shapes (a full-size memory bank with a
padding mask, object batches padded to a few bucket sizes), so that compiled graphs
(`sam2_video.compile`) are reused frame after frame instead of recompiled. Results are the same
(padded memory tokens are masked out; dummy batch rows are dropped); eager runs are a little
slower because the padding is computed too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from sam2_video.modeling.resize import resize_bilinear
from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model, SamHeadOutput
from sam2_video.tracking.dam4sam import Dam4SamMemory, apply_promotions
from sam2_video.tracking.memory_bank import FrameOutput, MemorySelection, ObjectMemory
from sam2_video.tracking.memory_layout import MemoryLayout
from sam2_video.tracking.object_chunks import chunk_slices, object_chunks
from sam2_video.utils.postprocess import fill_holes

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

    @classmethod
    def for_memory(cls, memory: str, fill_hole_area: int = 0) -> TrackerOptions:
        """Options for objects with `memory` ("sam2" / "dam4sam"). The official DAM4SAM fork
        fills no holes and picks the best of 3 masks for prompts of up to 3 points."""
        if memory == "dam4sam":
            return cls(fill_hole_area=0, multimask_max_points=3)
        return cls(fill_hole_area=fill_hole_area)


@dataclass(frozen=True)
class TrackGroup:
    """Objects to track on one frame of a multi-frame batch (`FrameTracker.track_frames`).

    frame_row: the frame's row in the batched `ImageFeatures`. frame_idx: the frame's index in
    its own video (memory selection is relative to it). reverse: tracking direction.
    """

    frame_row: int
    objects: list[ObjectMemory]
    frame_idx: int
    reverse: bool = False


@dataclass(frozen=True)
class StaticShapes:
    """Fixed tensor shapes for compiled graphs.

    max_conditioning_frames: most conditioning frames an object holds (the session's retention
        cap). With `num_maskmem` and the pointer window it fixes the memory bank to
        `max_conditioning_frames + num_maskmem - 1` frame slots and
        `(max_conditioning_frames + max_ptrs - 1) * hidden_dim / mem_dim` pointer tokens.
    batch_buckets: object batches are padded up to the next of these sizes (dummy rows copy the
        first object and are dropped), so one graph serves a range of object counts. Larger
        batches are padded to a multiple of the largest bucket (65 -> 128 with the default).
    """

    max_conditioning_frames: int = 4
    batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

    def __post_init__(self) -> None:
        if self.max_conditioning_frames < 1:
            raise ValueError(
                f"max_conditioning_frames must be >= 1, got {self.max_conditioning_frames}"
            )
        if not self.batch_buckets or list(self.batch_buckets) != sorted(set(self.batch_buckets)):
            raise ValueError(f"batch_buckets must be increasing, got {self.batch_buckets}")

    def bucket(self, batch: int) -> int:
        """The padded size of a batch of `batch` rows."""
        largest = self.batch_buckets[-1]
        if batch > largest:
            return -(-batch // largest) * largest
        return next(size for size in self.batch_buckets if size >= batch)

    def buckets_up_to(self, rows: int) -> tuple[int, ...]:
        """Every padded size a batch of 1 to `rows` rows can take (what a warm-up compiles)."""
        return tuple(sorted({self.bucket(n) for n in range(1, rows + 1)}))


class FrameTracker:
    """Stateless tracking step over a `SAM2Model` (composition, not inheritance).

    static_shapes: pad memory banks and object batches to fixed sizes (for compiled models,
        see `StaticShapes`); None keeps every tensor at its natural size (best for eager).
    """

    def __init__(
        self,
        model: SAM2Model,
        options: TrackerOptions | None = None,
        *,
        static_shapes: StaticShapes | None = None,
    ) -> None:
        self.model = model
        self.options = options or TrackerOptions()
        self.static_shapes = static_shapes
        self._layout = MemoryLayout(model)

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
        return self.track_frames(
            features, [TrackGroup(0, objects, frame_idx, reverse)], num_frames
        )[0]

    def track_frames(
        self, features: ImageFeatures, groups: list[TrackGroup], num_frames: int | None = None
    ) -> list[list[FrameOutput]]:
        """Track the objects of several frames (e.g. of several streams) in one batched forward.

        features: `ImageFeatures` of F frames (batch F). groups: which objects to track on which
        of those frames (`TrackGroup.frame_row` indexes the batch). Every object is one batch row
        that attends to its own memory and to its own frame's features, so the result of a row
        does not depend on what else is in the batch. Returns one list of `FrameOutput` per
        group, in the groups' order (memory encoded; the caller stores them).
        """
        rows = [(g.frame_row, obj, g.frame_idx, g.reverse) for g in groups for obj in g.objects]
        if not rows:
            return [[] for _ in groups]
        batch = len(rows)
        padded = self._padded_batch(batch)
        max_ptrs = self.max_pointers(num_frames)
        selections = [
            obj.select(frame_idx, reverse, self.model.num_maskmem, max_ptrs, num_frames)
            for _, obj, frame_idx, reverse in rows
        ]
        frame_rows = [frame_row for frame_row, *_ in rows]
        # Dummy rows repeat the first object: valid inputs whose outputs are dropped below.
        selections += [selections[0]] * (padded - batch)
        frame_rows += [frame_rows[0]] * (padded - batch)
        if features.image_embed.shape[0] == 1:
            # One frame: its features are shared by every row (views, no copies).
            row_features = features.expand_to(padded)
            frame_embed = features.image_embed  # (1, C, h, w), broadcast by the memory encoder
        else:
            row_features = features.select(torch.tensor(frame_rows, device=self.device))
            frame_embed = row_features.image_embed  # (B, C, h, w)
        pix_feat = self._attend(features, selections, max_ptrs, frame_rows)
        decoder_chunk, encoder_chunk = object_chunks(
            pix_feat.shape[-2] * pix_feat.shape[-1], pix_feat.device.type
        )
        heads = _cat_heads(
            [
                self.model.forward_sam_heads(
                    pix_feat[rows],
                    row_features.select(rows).high_res_features,
                    multimask_output=True,
                )
                for rows in chunk_slices(padded, decoder_chunk)
            ]
        )
        maskmem = self._encode_memory(
            frame_embed, heads.high_res_masks, heads.object_score_logits, False, encoder_chunk
        )
        heads = _first_rows(heads, batch)
        outputs = self._split_outputs(heads, maskmem[:batch].to(torch.bfloat16), from_prompt=False)
        self._promote_distractor_frames(rows, heads, outputs, frame_embed, encoder_chunk)
        grouped, start = [], 0
        for group in groups:
            grouped.append(outputs[start : start + len(group.objects)])
            start += len(group.objects)
        return grouped

    def _promote_distractor_frames(
        self,
        rows: list[tuple[int, ObjectMemory, int, bool]],
        heads: SamHeadOutput,
        outputs: list[FrameOutput],
        frame_embed: Tensor,
        encoder_chunk: int | None,
    ) -> None:
        """DAM4SAM objects: promote frames that reveal look-alikes to their DRM, with memory
        encoded again from the binarised mask (`sam2_video.tracking.dam4sam`)."""
        dam = [i for i, (_, obj, _, _) in enumerate(rows) if isinstance(obj, Dam4SamMemory)]
        if not dam:
            return
        objects = [obj for _, obj, _, _ in rows if isinstance(obj, Dam4SamMemory)]
        index = torch.tensor(dam, device=self.device)
        promoted = apply_promotions(
            objects,
            [rows[i][2] for i in dam],
            heads.low_res_multimasks[index],
            heads.ious[index],
            heads.low_res_masks[index],
            [outputs[i] for i in dam],
        )
        if not promoted:
            return
        rows_promoted = [dam[i] for i in promoted]
        at = torch.tensor(rows_promoted, device=self.device)
        embed = frame_embed if frame_embed.shape[0] == 1 else frame_embed[at]
        maskmem = self._encode_memory(
            embed, heads.high_res_masks[at], heads.object_score_logits[at], True, encoder_chunk
        )
        for i, mem in zip(rows_promoted, maskmem.to(torch.bfloat16)):
            outputs[i].maskmem = mem

    def max_pointers(self, num_frames: int | None) -> int:
        limit = self.model.config.max_obj_ptrs_in_encoder
        return limit if num_frames is None else min(num_frames, limit)

    def _padded_batch(self, batch: int) -> int:
        return batch if self.static_shapes is None else self.static_shapes.bucket(batch)

    def _attend(
        self,
        features: ImageFeatures,
        selections: list[MemorySelection],
        max_ptrs: int,
        frame_rows: list[int] | None = None,
    ) -> Tensor:
        """Memory-conditioned features (B, C, h, w) for B objects with their own memories.

        With `features` of one frame (batch 1) every object is on that frame and the memory
        attention takes the frame once. With F frames, `frame_rows` (B,) says which frame each
        object is on."""
        model = self.model
        batch = len(selections)
        _, channels, h, w = features.image_embed.shape
        split = model.hidden_dim // model.mem_dim  # memory tokens per object pointer
        num_slots = max(len(s.spatial) for s in selections)
        num_ptrs = max(len(s.pointers) for s in selections)
        if self.static_shapes is not None:
            # A full bank every frame: the shapes never change, so neither does the graph.
            cap = self.static_shapes.max_conditioning_frames
            num_slots = max(num_slots, cap + model.num_maskmem - 1)
            num_ptrs = max(num_ptrs, cap + max_ptrs - 1)
        memory, memory_pos, padding = self._layout.assemble(
            selections, num_slots, num_ptrs, max_ptrs, h, w
        )
        memory = memory.to(features.image_embed.dtype)
        memory_pos = memory_pos.to(features.image_embed.dtype)
        curr = features.image_embed.flatten(2).transpose(1, 2)  # (F, HW, C)
        curr_pos = features.image_pos.flatten(2).transpose(1, 2)  # (F, HW, C)
        if curr.shape[0] > 1:
            index = torch.tensor(frame_rows, device=curr.device)
            curr, curr_pos = curr[index], curr_pos[index]  # (B, HW, C): each row its own frame
        # Unpadded banks take the official (mask-free) path; static shapes always pass the mask
        # so that the compiled graph sees the same inputs every frame.
        needs_mask = self.static_shapes is not None or bool(padding.any())
        out = model.memory_attention(
            curr,
            memory,
            curr_pos,
            memory_pos,
            num_obj_ptr_tokens=num_ptrs * split,
            memory_key_padding_mask=padding if needs_mask else None,
        )  # (B, HW, C)
        return out.transpose(1, 2).reshape(batch, channels, h, w)

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
        batch = len(outputs)
        padded = self._padded_batch(batch)
        # Dummy rows (static shapes) repeat the first output; their memory is dropped.
        rows = outputs + [outputs[0]] * (padded - batch)
        low_res = torch.stack([out.low_res_logits for out in rows])  # (B, 1, S/4, S/4)
        size = (self.image_size, self.image_size)
        high_res = resize_bilinear(low_res, size)
        scores = torch.stack([out.object_score for out in rows])  # (B, 1)
        embed = features.image_embed  # (1, C, h, w)
        _, encoder_chunk = object_chunks(embed.shape[-2] * embed.shape[-1], embed.device.type)
        maskmem = self._encode_memory(embed, high_res, scores, True, encoder_chunk)
        for out, mem in zip(outputs, maskmem[:batch].to(torch.bfloat16)):
            out.maskmem = mem

    # ------------------------------------------------------------------ helpers
    def _encode_memory(
        self,
        frame_embed: Tensor,
        high_res_masks: Tensor,
        scores: Tensor,
        binarize: bool,
        chunk: int | None,
    ) -> Tensor:
        """Memory (B, mem_dim, h, w) float32 of B masks (B, 1, S, S), `chunk` objects per
        forward. frame_embed: (1, C, h, w) features of the one frame of every mask (projected
        once per chunk), or (B, C, h, w), one row per mask."""
        shared = frame_embed.shape[0] == 1
        parts = [
            self.model.encode_memory(
                frame_embed if shared else frame_embed[rows],
                high_res_masks[rows],
                scores[rows],
                binarize=binarize,
            )[0]
            for rows in chunk_slices(high_res_masks.shape[0], chunk)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

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

    def low_res(self, outputs: list[FrameOutput | None]) -> Tensor:
        """Low-res logits of objects, (N, 1, S/4, S/4); None -> -1024 (absent)."""
        low = self.image_size // 4
        return torch.stack(
            [
                out.low_res_logits
                if out is not None
                else torch.full((1, low, low), -1024.0, device=self.device)
                for out in outputs
            ]
        )

    def upsample(self, outputs: list[FrameOutput | None], hw: tuple[int, int]) -> Tensor:
        """Low-res logits of objects -> (N, H, W) logits at frame size; None -> -1024 (absent)."""
        return resize_bilinear(self.low_res(outputs), hw)[:, 0]


def _cat_heads(parts: list[SamHeadOutput]) -> SamHeadOutput:
    """Concatenate the rows of chunked head outputs (the one part itself when unchunked)."""
    if len(parts) == 1:
        return parts[0]
    return SamHeadOutput(
        *(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(SamHeadOutput))
    )


def _first_rows(heads: SamHeadOutput, count: int) -> SamHeadOutput:
    """The first `count` rows of every field (drops dummy batch rows)."""
    if heads.low_res_masks.shape[0] == count:
        return heads
    return SamHeadOutput(
        heads.low_res_multimasks[:count],
        heads.ious[:count],
        heads.low_res_masks[:count],
        heads.high_res_masks[:count],
        heads.obj_ptr[:count],
        heads.object_score_logits[:count],
    )
