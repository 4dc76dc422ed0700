"""Distractor-aware memory (DAM4SAM, "SAM2.1++"; Videnovic, Lukezic, Kristan, CVPR 2025).

Same network, other memory: DAM4SAM changes only which past frames an object remembers. This
module re-implements the behaviour of the official tracker (jovanavidenovic/DAM4SAM at 9c95450,
`dam4sam_tracker.py` and its SAM 2 fork), checked against its outputs in
`tests/fixtures/dam4sam/`. In our words, per object, with frames counted from the object's first
prompted frame ("frame 0"; the official tracker starts one tracker per object there):

Two memories.
* DRM, the distractor-resolving memory: frame 0 (and any later prompted frame) plus frames
  *promoted* while tracking. At most 4 are attended (`max_drm_attended`): the most recent DRM
  frame before t-1, frame 0, then the DRM frames closest to t, never t-1 itself (t-1 always
  belongs to the RAM).
* RAM, the recent-appearance memory, fills the rest of the 7 memory slots (7 - #DRM): first the
  most recent frame before t where the object was visible (a non-empty low-res mask; t-1 is
  taken even when it is a DRM frame), then frames on the stride-5 grid below it (10, 5 below
  13), each replaced by the next visible grid frame below when the object was absent there or
  the frame is in the DRM. Frame 0 is never a RAM frame.

Temporal encodings. Every attended DRM frame gets the conditioning slot (num_maskmem - 1). The
RAM frames get slots by recency among the RAM frames actually found: the newest 0, the next 1,
... (SAM 2 uses the distance in frames instead). The network receives the DRM frames first (in
the order above), then the RAM frames from oldest to newest.

Promotion. After tracking frame t (t >= 1) with its three candidate masks, the frame joins the
DRM when all of these hold:
* the chosen mask (best predicted IoU) has predicted IoU > 0.8;
* its area at video resolution is within [0.8, 1.2] times the median of the last 10 non-empty
  areas among the last 300 tracked frames (this frame's included; there must be an earlier
  tracked frame);
* no frame was promoted yet, or more than 5 frames ago;
* some alternative mask reveals a look-alike: take each other candidate at video resolution,
  remove the chosen mask, keep its largest 8-connected part, add the chosen mask back, and
  compare the box of that with the box of the chosen mask: a box IoU <= 0.7 promotes.
A promoted frame's memory is encoded again from its *binarised* chosen mask (the official code
does this at the start of the next frame, from the same frame features; we do it at once).

Object pointers: those of the attended DRM frames (distance |t - k|), then those of the frames
t-1, t-2, ... back to min(t + 1, 16) - 1 frames where the object was visible, skipping attended
DRM frames; distances are divided by min(t + 1, 16) - 1 before the sine encoding.

Config and post-processing as the official fork: SAM 2.1 weights and modules; prompts with up to
3 points pick the best of 3 masks (`multimask_max_pt_num: 3`, SAM 2.1 says 1); corrections are
conditioning frames; no hole filling (its `fill_holes_in_mask_scores` always returns its input);
masks may overlap; memory of prompted frames from binarised masks.

Quirks of the official code that we match on purpose (changing any of them changes which frames
are promoted or attended, so the fixture tests would catch it):
* Q1 boxes one pixel short: a mask's box is converted to (x, y, right - left, bottom - top) and
  rasterised over [x, x + w - 1], so the last row and column of the mask fall outside it (and a
  one-pixel-wide mask has an empty box). `box_iou_one_short` reproduces that arithmetic.
* Q2 pointer distances are unsigned (|t - k|) and normalised by the frames seen so far
  (min(t + 1, 16) - 1), so early frames have coarse encodings and a frame-0 pointer further
  than 15 frames away gets a position above 1.
* Q3 "visible" means at least one positive low-res logit of the stored mask, while the area
  test counts video-resolution pixels.
* Q4 the median is over the last 10 non-empty areas within the last 300 tracked frames,
  including the current frame's area.
* Q5 ties between equally large connected parts go to the first in raster order (OpenCV's
  labelling), as `keep_largest_component` picks the first maximum.

Bounded memory. The official tracker keeps every frame. Here a live stream keeps (besides the
pointer window) the latest visible frame, the 6 latest visible stride-5 frames (all that the RAM
rule can still reach) and the 4 latest promoted frames (all that the DRM selection and the
pointer rule can still reach), so results match the official tracker exactly while memory stays
flat. Tracking in reverse is not supported (the official rule is forward only).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from sam2_video.modeling.resize import resize_bilinear
from sam2_video.tracking.memory_bank import (
    FrameOutput,
    MemorySelection,
    ObjectMemory,
    RetentionPolicy,
)

MEMORY_KINDS = ("sam2", "dam4sam")


@dataclass(frozen=True)
class Dam4SamConfig:
    """The rule's constants (defaults = the official tracker).

    ram_stride: RAM frames after the first sit on this grid of frame indices.
    max_drm_attended: DRM frames attended at most per frame.
    min_iou: a frame is promoted only when the chosen mask's predicted IoU exceeds this.
    area_ratio: ...and its area over the recent median lies within this closed range.
    area_history / area_median_window: the median is over the last `area_median_window`
        non-empty areas among the last `area_history` tracked frames.
    min_gap: ...and more than this many frames passed since the last promotion.
    max_box_iou: ...and an alternative's box IoU with the chosen box is at most this.
    kept_promotions: promoted frames kept in a bounded stream (the most recent ones).
    """

    ram_stride: int = 5
    max_drm_attended: int = 4
    min_iou: float = 0.8
    area_ratio: tuple[float, float] = (0.8, 1.2)
    area_history: int = 300
    area_median_window: int = 10
    min_gap: int = 5
    max_box_iou: float = 0.7
    kept_promotions: int = 4


@dataclass
class Dam4SamMemory(ObjectMemory):
    """An object's memory under the DAM4SAM rule (see the module docstring).

    frame_hw: (H, W) of the video, where the promotion rule measures areas and boxes.
    promoted: DRM frames promoted while tracking (frame index -> output, memory re-encoded).
    areas: (frame index, video-resolution area) of the last `area_history` tracked frames.
    promotion_count: promotions so far (the dict above is bounded on live streams).
    """

    frame_hw: tuple[int, int] = (0, 0)
    config: Dam4SamConfig = field(default_factory=Dam4SamConfig)
    promoted: dict[int, FrameOutput] = field(default_factory=dict)
    areas: deque[tuple[int, int]] = field(default_factory=deque)
    last_promoted: int | None = None
    promotion_count: int = 0

    memory_kind = "dam4sam"

    # ------------------------------------------------------------------ state
    @property
    def origin(self) -> int:
        """The object's frame 0: its first prompted frame."""
        frames = list(self.conditioning) or list(self.pending)
        return min(frames) if frames else 0

    def drm(self) -> dict[int, FrameOutput]:
        """Every DRM frame: prompted (conditioning) frames, then promoted ones."""
        return {**self.conditioning, **self.promoted}

    def output_at(self, frame_idx: int) -> FrameOutput | None:
        """The latest result on a frame; a promoted frame's result lives in `promoted`."""
        out = super().output_at(frame_idx)
        return out if out is not None else self.promoted.get(frame_idx)

    def _tracked_only(self, frame_idx: int) -> FrameOutput | None:
        """The stored result of a frame that is not in the DRM (the official non-cond dict)."""
        if frame_idx in self.conditioning or frame_idx in self.promoted:
            return None
        return self.tracked.get(frame_idx)

    def observe(self, frame_idx: int, area: int, promote: bool, output: FrameOutput) -> None:
        """Record the rule's outcome for a tracked frame (called once per tracked frame).

        Tracking a frame again (offline re-propagation) first forgets what was recorded from it
        on, so the rule sees the history the official tracker would.
        """
        if self.areas and self.areas[-1][0] >= frame_idx:
            while self.areas and self.areas[-1][0] >= frame_idx:
                self.areas.pop()
            for t in [t for t in self.promoted if t >= frame_idx]:
                del self.promoted[t]
            self.last_promoted = max(self.promoted, default=None)
        self.areas.append((frame_idx, area))
        while len(self.areas) > self.config.area_history:
            self.areas.popleft()
        if promote:
            self.promoted[frame_idx] = output
            self.last_promoted = frame_idx
            self.promotion_count += 1

    def promotion_due(self, frame_idx: int, area: int, iou: float) -> bool:
        """The first three promotion tests (IoU, area ratio, gap) for `area` on `frame_idx`."""
        cfg = self.config
        if iou <= cfg.min_iou or area < 1:
            return False
        if self.last_promoted is not None and frame_idx - self.last_promoted <= cfg.min_gap:
            return False
        history = [a for t, a in self.areas if t < frame_idx] + [area]
        if len(history) < 2:
            return False
        recent = [a for a in history[-cfg.area_history :] if a >= 1][-cfg.area_median_window :]
        ratio = area / float(np.median(recent))
        return cfg.area_ratio[0] <= ratio <= cfg.area_ratio[1]

    # ------------------------------------------------------------------ selection
    def select(
        self, frame_idx: int, reverse: bool, num_maskmem: int, max_ptrs: int, num_frames: int | None
    ) -> MemorySelection:
        """The memory of `frame_idx` under the DAM4SAM rule (forward tracking only)."""
        if reverse:
            raise ValueError("dam4sam memory tracks forward only")
        origin = self.origin
        drm = self.drm()
        chosen = self._select_drm(frame_idx, drm, origin)
        ram = self._select_ram(frame_idx, num_maskmem - len(chosen), drm, chosen, origin)
        # DRM frames first, in selection order; then RAM frames oldest first, slot = recency.
        spatial = [(num_maskmem - 1, out) for out in chosen.values() if out.maskmem is not None]
        ram.sort(key=lambda item: item[0])
        spatial += [(len(ram) - 1 - i, out) for i, (_, out) in enumerate(ram)]

        span = min(frame_idx - origin + 1, max_ptrs)  # Q2: the frames seen so far, capped
        pointers = [(abs(frame_idx - t), out) for t, out in chosen.items() if t <= frame_idx]
        for offset in range(1, span):
            t = frame_idx - offset
            if t < origin:
                break
            out = self.tracked.get(t) if t not in drm else None
            if out is None and t in drm and t not in chosen:
                out = drm[t]
            if out is not None and _visible(out):
                pointers.append((offset, out))
        return MemorySelection(spatial, pointers, pointer_span=span)

    def _select_drm(
        self, frame_idx: int, drm: dict[int, FrameOutput], origin: int
    ) -> dict[int, FrameOutput]:
        """Attended DRM frames in the official order (latest before t-1, frame 0, closest)."""
        chosen: dict[int, FrameOutput] = {}
        before = max((t for t in drm if t < frame_idx - 1), default=None)
        if before is not None:
            chosen[before] = drm[before]
        if origin in drm and origin not in chosen:
            chosen[origin] = drm[origin]
        room = self.config.max_drm_attended - len(chosen)
        rest = sorted(
            (t for t in drm if t not in chosen and t != frame_idx - 1),
            key=lambda t: abs(t - frame_idx),
        )[: max(room, 0)]
        chosen.update((t, drm[t]) for t in rest)
        return chosen

    def _select_ram(
        self,
        frame_idx: int,
        count: int,
        drm: dict[int, FrameOutput],
        chosen: dict[int, FrameOutput],
        origin: int,
    ) -> list[tuple[int, FrameOutput]]:
        """(frame, output) of the RAM frames found for `frame_idx` (at most `count`)."""
        stride = self.config.ram_stride
        found: list[tuple[int, FrameOutput]] = []
        t = frame_idx - 1
        for i in range(count):
            if i == 0:
                prev = drm[t] if t in drm else self.tracked.get(t)
                step = 1
            elif t >= origin:
                t = origin + ((t - origin - 1) // stride) * stride
                prev, step = self._tracked_only(t), stride
            else:
                continue
            if prev is None or not _visible(prev) or t in chosen:
                prev = None
                while True:
                    t -= step
                    if t <= origin:
                        break
                    candidate = self._tracked_only(t)
                    if candidate is not None and _visible(candidate) and t not in chosen:
                        prev = candidate
                        break
            if prev is not None and prev.maskmem is not None:
                found.append((t, prev))
        return found

    # ------------------------------------------------------------------ retention
    def retain(self, frame_idx: int, policy: RetentionPolicy, num_maskmem: int) -> None:
        """Bound the memory without changing what the rule can still attend to."""
        if policy.max_frame_distance is not None:
            keep_memory = self._reachable_ram()
            window = policy.max_frame_distance
            for t in list(self.tracked):
                if t in self.promoted or t in self.conditioning:
                    del self.tracked[t]  # the DRM holds it
                elif abs(t - frame_idx) > window and t not in keep_memory:
                    del self.tracked[t]
                elif t not in keep_memory and t < frame_idx - 1:
                    self.tracked[t].maskmem = None  # only its pointer can still be read
            self._forget_frame_bookkeeping(frame_idx, window)
            for t in sorted(self.promoted)[: -self.config.kept_promotions or None]:
                del self.promoted[t]
        self._cap_conditioning(policy)

    def _reachable_ram(self) -> set[int]:
        """Tracked frames whose memory a later RAM selection can still pick."""
        visible = [t for t in sorted(self.tracked, reverse=True) if _visible(self.tracked[t])]
        visible = [t for t in visible if t not in self.promoted and t not in self.conditioning]
        origin, stride = self.origin, self.config.ram_stride
        grid = [t for t in visible if (t - origin) % stride == 0][:6]
        return set(visible[:1]) | set(grid)


def _visible(out: FrameOutput) -> bool:
    """The object has a positive low-res logit in `out` (Q3), cached on the output."""
    if out.visible is None:
        out.visible = bool((out.low_res_logits > 0).any())
    return out.visible


# ---------------------------------------------------------------------- the promotion rule
def box_iou_one_short(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two mask boxes as the official test computes it (Q1).

    a, b: inclusive pixel bounds (left, top, right, bottom) of non-empty masks. Each box
    covers columns left..right-1 and rows top..bottom-1 (one pixel short); when the boxes'
    union spans at most one pixel in x or y the official code calls them identical (1.0).
    """
    ul, ut = min(a[0], b[0]), min(a[1], b[1])
    ur, ub = max(a[2] - 1, b[2] - 1), max(a[3] - 1, b[3] - 1)
    if ul >= ur or ut >= ub:
        return 1.0

    def area(box: tuple[int, int, int, int]) -> int:
        return max(0, box[2] - box[0]) * max(0, box[3] - box[1])

    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih if area(a) and area(b) else 0
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (left, top, right, bottom) of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a non-empty (H, W) bool mask (first on ties, Q5)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def reveals_distractor(chosen: np.ndarray, alternatives: list[np.ndarray], max_iou: float) -> bool:
    """The box test: does an alternative (H, W) bool mask reveal a look-alike of `chosen`?

    Same answer as the official test (the minimum over the alternatives of the box IoU is at
    most `max_iou`), with two exact shortcuts: it stops at the first alternative that passes,
    and it skips the connected-component labelling when even the box of everything the
    alternative adds keeps the IoU above `max_iou` (the largest part's box lies inside that
    box, and with the chosen box inside both the IoU only grows as the box shrinks).
    """
    chosen_box = _bounds(chosen)
    for alt in alternatives:
        extra = alt & ~chosen
        if not extra.any():
            continue
        outer = _bounds(extra | chosen)
        if box_iou_one_short(chosen_box, outer) > max_iou:
            continue
        if box_iou_one_short(chosen_box, _bounds(_largest_part(extra) | chosen)) <= max_iou:
            return True
    return False


def apply_promotions(
    objects: list[Dam4SamMemory],
    frame_indices: list[int],
    low_res_multimasks: Tensor,
    ious: Tensor,
    chosen_logits: Tensor,
    outputs: list[FrameOutput],
) -> list[int]:
    """Run the promotion rule on freshly tracked rows and record the outcome in each object.

    low_res_multimasks (B, 3, S/4, S/4) and ious (B, 3): the candidates of these rows;
    chosen_logits (B, 1, S/4, S/4): the chosen low-res masks; outputs: the rows' results
    (`visible` is filled in). Returns the rows whose frame was promoted: the caller re-encodes
    their memory from the binarised mask.
    """
    for out, visible in zip(outputs, (chosen_logits > 0).flatten(1).any(dim=1).tolist()):
        out.visible = visible
    areas = _video_areas(chosen_logits, [obj.frame_hw for obj in objects])
    best = ious.float().max(dim=1)
    best_iou, best_index = best.values.tolist(), best.indices.tolist()
    promoted = []
    for row, (obj, frame_idx) in enumerate(zip(objects, frame_indices)):
        promote = obj.promotion_due(frame_idx, areas[row], best_iou[row])
        if promote:
            hw = obj.frame_hw
            chosen = resize_bilinear(chosen_logits[row : row + 1], hw)[0, 0] > 0  # (H, W)
            others = [k for k in range(low_res_multimasks.shape[1]) if k != best_index[row]]
            alts = resize_bilinear(low_res_multimasks[row, others][None], hw)[0] > 0  # (2, H, W)
            promote = reveals_distractor(
                chosen.cpu().numpy(), list(alts.cpu().numpy()), obj.config.max_box_iou
            )
        obj.observe(frame_idx, areas[row], promote, outputs[row])
        if promote:
            promoted.append(row)
    return promoted


def _video_areas(chosen_logits: Tensor, sizes: list[tuple[int, int]]) -> list[int]:
    """Positive pixels of each (1, S/4, S/4) mask upsampled to its video's (H, W), as the
    official tracker counts them.

    Without materialising H x W per object: bilinear enlarging interpolates along W, then
    along H, column by column (two 1-D passes give the 2-D call's values bit for bit, see
    `sam2_video.modeling.resize`), and a column can only hold positive pixels if its W-pass
    values have one; so only those columns take the H pass (~5x less work for an object a
    fifth of the frame wide, the same for one spanning it).
    """
    areas = [0] * len(sizes)
    for hw in set(sizes):
        rows = [i for i, size in enumerate(sizes) if size == hw]
        index = torch.tensor(rows, device=chosen_logits.device)
        low = chosen_logits[index]  # (n, 1, h, w)
        wide = resize_bilinear(low, (low.shape[-2], hw[1]))  # (n, 1, h, W)
        columns = (wide > 0).any(dim=2)[:, 0]  # (n, W)
        for k, i in enumerate(rows):
            keep = columns[k].nonzero()[:, 0]
            if keep.numel():
                strip = wide[k : k + 1, :, :, keep]  # (1, 1, h, K)
                areas[i] = int((resize_bilinear(strip, (hw[0], keep.numel())) > 0).sum())
    return areas


def new_object_memory(
    obj_id: int, memory: str, frame_hw: tuple[int, int], config: Dam4SamConfig | None = None
) -> ObjectMemory:
    """A fresh object memory of kind `memory` ("sam2" or "dam4sam") for a video of frame_hw."""
    if memory == "sam2":
        return ObjectMemory(obj_id)
    if memory == "dam4sam":
        return Dam4SamMemory(obj_id, frame_hw=frame_hw, config=config or Dam4SamConfig())
    raise ValueError(f"unknown memory {memory!r}; expected one of {MEMORY_KINDS}")


def check_memory_kind(memory: str) -> str:
    """`memory` if it names a memory kind, else ValueError."""
    if memory not in MEMORY_KINDS:
        raise ValueError(f"unknown memory {memory!r}; expected one of {MEMORY_KINDS}")
    return memory


__all__ = [
    "MEMORY_KINDS",
    "Dam4SamConfig",
    "Dam4SamMemory",
    "apply_promotions",
    "box_iou_one_short",
    "check_memory_kind",
    "new_object_memory",
    "reveals_distractor",
]
