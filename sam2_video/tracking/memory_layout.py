"""How the memory banks of a batch of objects are laid out for `MemoryAttention`.

Each batch row holds one object's memory: its selected memory frames (HW tokens each, with the
spatial + temporal position encoding of their slot) and then its object pointers (split into
hidden_dim / mem_dim tokens each, with their temporal encoding). Rows with fewer frames or
pointers are padded and masked (see `sam2_video.modeling.memory_attention`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.tracking.memory_bank import MemorySelection


class MemoryLayout:
    """Builds the memory / position / padding tensors of B memory banks for one model."""

    def __init__(self, model: SAM2Model) -> None:
        self.model = model
        self._pos: Tensor | None = None  # (HW, mem_dim), the same for every memory

    def assemble(
        self,
        selections: list[MemorySelection],
        num_slots: int,
        num_ptrs: int,
        max_ptrs: int,
        h: int,
        w: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Lay out B memory banks as `MemoryAttention` expects, with one copy per tensor kind.

        Returns memory and memory_pos (B, num_slots * HW + num_ptrs * split, mem_dim) float32 and
        the padding mask (B, same) bool, True = padding. Row b holds selection b's frames in
        slots 0.. and its pointers in pointer places 0..; the rest is zero and padded.
        """
        model = self.model
        hw, mem_dim = h * w, model.mem_dim
        split = model.hidden_dim // mem_dim
        batch, device = len(selections), self.model.device
        # Gather (row, place, ...) of every memory frame and pointer first, then write each
        # kind with one indexed copy instead of ~30 small copies per object.
        frame_rows, frame_places, frame_slots, frame_mems = [], [], [], []
        ptr_rows, ptr_places, ptr_offsets, ptr_values, ptr_spans = [], [], [], [], []
        for row, selection in enumerate(selections):
            span = max_ptrs if selection.pointer_span is None else selection.pointer_span
            for place, (slot, out) in enumerate(selection.spatial):
                frame_rows.append(row)
                frame_places.append(place)
                frame_slots.append(slot)
                assert out.maskmem is not None  # `ObjectMemory.select` keeps encoded frames only
                frame_mems.append(out.maskmem)
            for place, (offset, out) in enumerate(selection.pointers):
                ptr_rows.append(row)
                ptr_places.append(place)
                ptr_offsets.append(offset)
                ptr_values.append(out.obj_ptr)
                ptr_spans.append(span)

        spatial = torch.zeros(batch, num_slots, hw, mem_dim, device=device)
        spatial_pos = torch.zeros_like(spatial)
        spatial_pad = torch.ones(batch, num_slots, dtype=torch.bool, device=device)
        if frame_mems:
            index = (
                torch.tensor(frame_rows, device=device),
                torch.tensor(frame_places, device=device),
            )
            mems = torch.stack(frame_mems).flatten(2).transpose(1, 2)  # (K, HW, mem_dim) bf16
            tpos = model.maskmem_tpos_enc.view(model.num_maskmem, 1, mem_dim)
            slot_pos = self._pos_encoding(h, w) + tpos  # (num_maskmem, HW, mem_dim)
            spatial[index] = mems.float()
            spatial_pos[index] = slot_pos[torch.tensor(frame_slots, device=device)].float()
            spatial_pad[index] = False

        tokens = torch.zeros(batch, num_ptrs, split, mem_dim, device=device)
        tokens_pos = torch.zeros(batch, num_ptrs, mem_dim, device=device)
        tokens_pad = torch.ones(batch, num_ptrs, dtype=torch.bool, device=device)
        if ptr_values:
            index = (
                torch.tensor(ptr_rows, device=device),
                torch.tensor(ptr_places, device=device),
            )
            ptrs = torch.stack(ptr_values)  # (K, C)
            offsets = torch.tensor(ptr_offsets, device=device)
            # Under autocast the projections give bf16/fp16: the bank stays float32 (as the
            # official's torch.cat promotes its bf16 memories), so cast what is written into it.
            tokens[index] = model.pointer_tokens(ptrs[None])[0].unflatten(0, (-1, split)).float()
            spans = (
                torch.tensor(ptr_spans, device=device) if len(set(ptr_spans)) > 1 else ptr_spans[0]
            )
            tokens_pos[index] = model.pointer_temporal_encoding(
                offsets, spans
            ).float()  # (K, mem_dim)
            tokens_pad[index] = False

        memory = torch.cat([spatial.flatten(1, 2), tokens.flatten(1, 2)], dim=1)  # (B, M, mem_dim)
        memory_pos = torch.cat(
            [spatial_pos.flatten(1, 2), tokens_pos.repeat_interleave(split, dim=1)], dim=1
        )  # (B, M, mem_dim)
        padding = torch.cat(
            [spatial_pad.repeat_interleave(hw, dim=1), tokens_pad.repeat_interleave(split, dim=1)],
            dim=1,
        )  # (B, M)
        return memory, memory_pos, padding

    def _pos_encoding(self, h: int, w: int) -> Tensor:
        """Spatial position encoding of memory tokens (HW, mem_dim): a constant of the model."""
        if self._pos is None or self._pos.shape[0] != h * w:
            probe = torch.zeros(1, self.model.mem_dim, h, w, device=self.model.device)
            pos = self.model.memory_encoder.position_encoding(probe)  # (1, mem_dim, h, w)
            self._pos = pos[0].flatten(1).t().contiguous()
        return self._pos
