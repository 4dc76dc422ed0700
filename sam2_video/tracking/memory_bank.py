"""Per-object tracking memory: what each object remembers and which of it a frame attends to.

SAM 2 conditions frame t of an object on
* the memories of all its conditioning frames (frames the user prompted),
* the memories of its last `num_maskmem - 1` tracked frames (t-1 .. t-6; t+1 .. for reverse),
* object pointers of conditioning frames in the past and of the last `max_ptrs - 1` frames.

`ObjectMemory` stores exactly that, keyed by frame index, and `select` picks a frame's memory
the way the official predictor does. A `RetentionPolicy` bounds what is kept, so that a live
stream runs at constant memory; offline use keeps everything, as the official predictor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class FrameOutput:
    """One object's result on one frame (S = model input size, C = hidden dim).

    low_res_logits: (1, S/4, S/4) float32 mask logits ("pred_masks" in SAM 2).
    obj_ptr: (C,) float32 object pointer.
    object_score: (1,) float32 logit, > 0 means the object is present.
    maskmem: (mem_dim, S/16, S/16) bfloat16 memory features, None until encoded (prompted frames
        are encoded when tracking moves on, like the official `propagate_in_video` preflight).
    ious: (M,) predicted IoU of the returned mask token(s), for reporting.
    from_prompt: the mask came from user prompts (its memory is encoded from a binarised mask).
    visible: the mask has a positive low-res logit; filled in by memory policies that ask
        (`sam2_video.tracking.dam4sam`), None until then.
    """

    low_res_logits: Tensor
    obj_ptr: Tensor
    object_score: Tensor
    maskmem: Tensor | None = None
    ious: Tensor | None = None
    from_prompt: bool = False
    visible: bool | None = None


@dataclass
class PendingOutput:
    """A prompted result whose memory is not encoded yet (official `temp_output_dict`)."""

    output: FrameOutput
    is_conditioning: bool


@dataclass(frozen=True)
class RetentionPolicy:
    """How much of an object's history is kept.

    max_conditioning_frames: conditioning frames kept per object (None: all). Beyond it the
        first one and the most recent ones are kept (the first prompt usually defines the object).
    max_frame_distance: tracked (non-conditioning) frames farther than this from the frame
        being processed are dropped (None: keep all, as the offline official predictor does).
    """

    max_conditioning_frames: int | None = None
    max_frame_distance: int | None = None


@dataclass
class MemorySelection:
    """The memory one frame of one object attends to.

    spatial: (slot, output) pairs; slot indexes `maskmem_tpos_enc` (num_maskmem-1 for
        conditioning frames, 0 for the previous frame, 5 for six frames back).
    pointers: (signed temporal offset, output) pairs.
    pointer_span: offsets are divided by pointer_span - 1 before their sine encoding; None:
        the tracker's pointer window for the step (SAM 2). DAM4SAM uses the frames seen so far.
    """

    spatial: list[tuple[int, FrameOutput]]
    pointers: list[tuple[int, FrameOutput]]
    pointer_span: int | None = None


@dataclass
class ObjectMemory:
    """Everything tracked for one object id."""

    obj_id: int
    conditioning: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, FrameOutput] = field(default_factory=dict)
    pending: dict[int, PendingOutput] = field(default_factory=dict)
    # Prompt points per frame, model-input pixels: coords (1, P, 2) float32, labels (1, P) int32.
    points: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    mask_prompt_frames: set[int] = field(default_factory=set)
    # Frames this object has an answer for -> whether they were reached tracking in reverse.
    frames_tracked: dict[int, bool] = field(default_factory=dict)

    # Which memory rule this object follows ("sam2" here; subclasses name theirs).
    memory_kind = "sam2"

    def output_at(self, frame_idx: int) -> FrameOutput | None:
        """The latest result on a frame: pending prompt, then conditioning, then tracked."""
        pending = self.pending.get(frame_idx)
        if pending is not None:
            return pending.output
        return self.conditioning.get(frame_idx) or self.tracked.get(frame_idx)

    def has_prompts(self) -> bool:
        return bool(self.conditioning or self.pending)

    def select(
        self, frame_idx: int, reverse: bool, num_maskmem: int, max_ptrs: int, num_frames: int | None
    ) -> MemorySelection:
        """Memory for `frame_idx`, as the official `_prepare_memory_conditioned_features`."""
        step = -1 if reverse else 1
        cond_slot = num_maskmem - 1
        spatial = [
            (cond_slot, out) for out in self.conditioning.values() if out.maskmem is not None
        ]
        for frames_back in range(num_maskmem - 1, 0, -1):
            out = self.tracked.get(frame_idx - step * frames_back)
            if out is not None and out.maskmem is not None:
                spatial.append((frames_back - 1, out))

        # Only pointers from the past: a future prompt must not steer the current frame.
        pointers = [
            ((frame_idx - t) * step, out)
            for t, out in self.conditioning.items()
            if (t - frame_idx) * step <= 0
        ]
        for offset in range(1, max_ptrs):
            t = frame_idx - step * offset
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = self.tracked.get(t)
            if out is not None:
                pointers.append((offset, out))
        return MemorySelection(spatial, pointers)

    def retain(self, frame_idx: int, policy: RetentionPolicy, num_maskmem: int) -> None:
        """Drop what `policy` says can no longer be attended to from `frame_idx` on."""
        if policy.max_frame_distance is not None:
            for t in [t for t in self.tracked if abs(t - frame_idx) > policy.max_frame_distance]:
                del self.tracked[t]
            self._forget_frame_bookkeeping(frame_idx, policy.max_frame_distance)
            # Spatial memory of frames beyond the memory window is never read again.
            for t, out in self.tracked.items():
                if abs(t - frame_idx) >= num_maskmem and out.maskmem is not None:
                    out.maskmem = None
        self._cap_conditioning(policy)

    def _forget_frame_bookkeeping(self, frame_idx: int, distance: int) -> None:
        """Forget points and tracked-frame flags of frames farther than `distance`."""
        for t in [t for t in self.points if abs(t - frame_idx) > distance]:
            if t not in self.conditioning and t not in self.pending:
                del self.points[t]
        for t in [t for t in self.frames_tracked if abs(t - frame_idx) > distance]:
            if t not in self.conditioning:
                del self.frames_tracked[t]

    def _cap_conditioning(self, policy: RetentionPolicy) -> None:
        """Keep the first and the most recent conditioning frames (`max_conditioning_frames`)."""
        cap = policy.max_conditioning_frames
        if cap is not None and len(self.conditioning) > cap:
            frames = sorted(self.conditioning)
            keep = {frames[0], *frames[len(frames) - (cap - 1) :]} if cap > 1 else {frames[-1]}
            for t in frames:
                if t not in keep:
                    del self.conditioning[t]
                    self.points.pop(t, None)
                    self.frames_tracked.pop(t, None)
