"""Offline video segmentation with the official `SAM2VideoPredictor` method names.

Users of Meta's library can switch by changing the import: `init_state`, `add_new_points_or_box`,
`add_new_mask`, `propagate_in_video`, `clear_all_prompts_in_frame`, `remove_object`,
`reset_state` behave as the official ones. The state is a typed `VideoInferenceState`, and the
per-frame work is the same `FrameTracker` step the streaming session uses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
from sam2_video.precision import inference_method
from sam2_video.tracking.dam4sam import check_memory_kind, new_object_memory
from sam2_video.tracking.memory_bank import (
    FrameOutput,
    ObjectMemory,
    PendingOutput,
    RetentionPolicy,
)
from sam2_video.tracking.prompts import (
    UnknownObjectError,
    commit_pending,
    merge_points,
    prepare_mask_prompt,
    prepare_point_prompt,
)
from sam2_video.tracking.tracker import FrameTracker, TrackerOptions
from sam2_video.utils.postprocess import non_overlapping
from sam2_video.utils.transforms import normalize_uint8_frames
from sam2_video.utils.video_io import FrameResize, compact_frames, load_video_frames, resize_frame

# Image features of this many recent frames are cached (prompting then propagating re-uses them).
FEATURE_CACHE_FRAMES = 2


@dataclass
class VideoInferenceState:
    """Everything the offline predictor keeps for one video.

    frames: (T, h, w, 3) uint8 RGB, each either at the original resolution or already resized
        to the model input S x S (whichever has fewer pixels; `video_hw` gives the original
        (H, W)).
    resize: how frames still at the original resolution become the model input (see
        `video_io.FrameResize`).
    objects: per object id, in the order they were added (the "obj_idx" of the official code).
    """

    frames: np.ndarray
    video_hw: tuple[int, int]
    resize: FrameResize = "bilinear"
    objects: OrderedDict[int, ObjectMemory] = field(default_factory=OrderedDict)
    feature_cache: OrderedDict[int, ImageFeatures] = field(default_factory=OrderedDict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def video_height(self) -> int:
        return self.video_hw[0]

    @property
    def video_width(self) -> int:
        return self.video_hw[1]

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)


class SAM2VideoPredictor:
    """Offline video predictor over a `SAM2Model` (composition).

    add_all_frames_to_correct_as_cond: a prompt on an already tracked frame makes it a
        conditioning frame (default False, as official: it is a correction seen only by the
        next few frames' memory).
    non_overlap_masks: each pixel goes to at most one object in the returned masks.
    memory: "sam2" or "dam4sam" (distractor-aware memory, `sam2_video.tracking.dam4sam`;
        forward propagation only, no hole filling).
    """

    def __init__(
        self,
        model: SAM2Model,
        *,
        fill_hole_area: int = 0,
        non_overlap_masks: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        memory: str = "sam2",
    ) -> None:
        self.model = model
        self.memory = check_memory_kind(memory)
        self.tracker = FrameTracker(model, TrackerOptions.for_memory(memory, fill_hole_area))
        self.non_overlap_masks = non_overlap_masks
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        # Offline: keep every frame's result, as the official predictor (it is offline).
        self.retention = RetentionPolicy()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ------------------------------------------------------------------ state
    def init_state(
        self,
        video: str | Path | np.ndarray,
        video_hw: tuple[int, int] | None = None,
    ) -> VideoInferenceState:
        """Open a video: an mp4/any PyAV-readable file, a folder of `<int>.jpg`, or an array.

        video: path, or (T, H, W, 3) uint8 RGB frames. With `video_hw` the array holds frames
            already resized to S x S (e.g. by the official PIL loader) from videos of that
            (H, W) size, and they are used as they are.

        Frames are held as uint8 at the smaller of native and model size. A JPEG folder is
        decoded and resized as the official loader does (Pillow, bicubic), so it gives the
        official predictor's masks; video files and arrays take the streaming session's
        uint8 bilinear resize, so the offline and streaming drivers see the same pixels.
        """
        size = self.image_size
        if isinstance(video, np.ndarray):
            if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or not len(video):
                raise ValueError(
                    "video frames must be (T, H, W, 3) uint8 with T >= 1, "
                    f"got {video.shape} {video.dtype}"
                )
            if video_hw is not None:
                if video.shape[1:3] != (size, size):
                    raise ValueError(
                        f"with video_hw the frames must be pre-resized to {size}x{size}"
                    )
                return VideoInferenceState(
                    frames=video, video_hw=(int(video_hw[0]), int(video_hw[1]))
                )
            method: FrameResize = "bilinear"
            native_hw = (int(video.shape[1]), int(video.shape[2]))
            # Smaller than the model input: use the caller's array as it is (no copy).
            if native_hw[0] * native_hw[1] > size * size:
                frames, native_hw = compact_frames(video, size, method)
            else:
                frames = video
        else:
            frames, native_hw, method = load_video_frames(video, size)
        return VideoInferenceState(frames=frames, video_hw=native_hw, resize=method)

    def reset_state(self, state: VideoInferenceState) -> None:
        """Remove every object, prompt and result."""
        state.objects.clear()

    def _features(self, state: VideoInferenceState, frame_idx: int) -> ImageFeatures:
        cached = state.feature_cache.get(frame_idx)
        if cached is not None:
            state.feature_cache.move_to_end(frame_idx)
            return cached
        frame = resize_frame(state.frames[frame_idx], self.image_size, state.resize)  # (S, S, 3)
        model_input = normalize_uint8_frames(frame[None], self.device)  # (1, 3, S, S)
        features = self.model.forward_image(model_input)
        state.feature_cache[frame_idx] = features
        while len(state.feature_cache) > FEATURE_CACHE_FRAMES:
            state.feature_cache.popitem(last=False)
        return features

    def _object(self, state: VideoInferenceState, obj_id: int, create: bool) -> ObjectMemory:
        """The object with this id; with `create`, a new one not yet registered in the state
        (the caller adds it once its first prompt has succeeded)."""
        obj = state.objects.get(obj_id)
        if obj is None:
            if not create:
                raise UnknownObjectError(f"unknown object id {obj_id}; known: {state.obj_ids}")
            obj = new_object_memory(obj_id, self.memory, state.video_hw)
        return obj

    def _check_frame(self, state: VideoInferenceState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"frame_idx {frame_idx} outside the video (0..{state.num_frames - 1})")

    # ------------------------------------------------------------------ prompts
    @inference_method
    def add_new_points_or_box(
        self,
        inference_state: VideoInferenceState,
        frame_idx: int,
        obj_id: int,
        points: np.ndarray | Tensor | None = None,
        labels: np.ndarray | Tensor | None = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: np.ndarray | Tensor | None = None,
    ) -> tuple[int, list[int], Tensor]:
        """Add clicks and/or a box for an object on a frame; returns that frame's masks.

        points: (P, 2) float (x, y) pixels of the video frame; labels (P,) 1 pos / 0 neg.
        box: (4,) xyxy pixels. Returns (frame_idx, obj_ids, (N, 1, H, W) float logits) for all
        objects on the frame (-1024 where an object has no answer yet).
        """
        state = inference_state
        self._check_frame(state, frame_idx)
        coords, point_labels = prepare_point_prompt(
            points, labels, box, state.video_hw, self.image_size, normalize_coords, self.device
        )
        if box is not None and not clear_old_points:
            raise ValueError("a box must come first: use clear_old_points=True with a box")
        obj = self._object(state, obj_id, create=True)
        coords, point_labels = merge_points(obj, frame_idx, coords, point_labels, clear_old_points)
        features = self._features(state, frame_idx)
        output, is_init = self.tracker.prompt_points(
            features, obj, frame_idx, coords, point_labels, state.num_frames
        )
        obj.points[frame_idx] = (coords, point_labels)
        obj.mask_prompt_frames.discard(frame_idx)
        self._store_pending(state, obj, frame_idx, output, is_init)
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx)

    @inference_method
    def add_new_mask(
        self,
        inference_state: VideoInferenceState,
        frame_idx: int,
        obj_id: int,
        mask: np.ndarray | Tensor,
    ) -> tuple[int, list[int], Tensor]:
        """Give an object's mask on a frame: (H, W) bool at the video resolution."""
        state = inference_state
        self._check_frame(state, frame_idx)
        model_mask = prepare_mask_prompt(mask, self.image_size, self.device)
        obj = self._object(state, obj_id, create=True)
        features = self._features(state, frame_idx)
        output, is_init = self.tracker.prompt_mask(features, obj, frame_idx, model_mask)
        obj.points.pop(frame_idx, None)
        obj.mask_prompt_frames.add(frame_idx)
        self._store_pending(state, obj, frame_idx, output, is_init)
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx)

    def _store_pending(
        self,
        state: VideoInferenceState,
        obj: ObjectMemory,
        frame_idx: int,
        output: FrameOutput,
        is_init: bool,
    ) -> None:
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        obj.pending[frame_idx] = PendingOutput(output, is_cond)
        state.objects.setdefault(obj.obj_id, obj)  # registered once a prompt has succeeded

    def _frame_masks(self, state: VideoInferenceState, frame_idx: int) -> Tensor:
        """(N, 1, H, W) logits of every object's latest answer on a frame."""
        outputs = [obj.output_at(frame_idx) for obj in state.objects.values()]
        masks = self.tracker.upsample(outputs, state.video_hw)
        if self.non_overlap_masks:
            masks = non_overlapping(masks)
        return masks[:, None]

    @inference_method
    def clear_all_prompts_in_frame(
        self,
        inference_state: VideoInferenceState,
        frame_idx: int,
        obj_id: int,
        need_output: bool = True,
    ) -> tuple[int, list[int], Tensor] | None:
        """Forget an object's prompts on a frame (its result there becomes a tracked one)."""
        state = inference_state
        obj = self._object(state, obj_id, create=False)
        obj.points.pop(frame_idx, None)
        obj.mask_prompt_frames.discard(frame_idx)
        obj.pending.pop(frame_idx, None)
        out = obj.conditioning.pop(frame_idx, None)
        if out is not None:
            obj.tracked[frame_idx] = out
            obj.frames_tracked.pop(frame_idx, None)
        if not need_output:
            return None
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx)

    @inference_method
    def remove_object(
        self,
        inference_state: VideoInferenceState,
        obj_id: int,
        strict: bool = False,
        need_output: bool = True,
    ) -> tuple[list[int], list[tuple[int, Tensor]]]:
        """Stop tracking an object.

        Returns (obj_ids, [(frame_idx, masks)] of the frames it had prompts on).
        """
        state = inference_state
        obj = state.objects.get(obj_id)
        if obj is None:
            if strict:
                raise UnknownObjectError(f"unknown object id {obj_id}; known: {state.obj_ids}")
            return state.obj_ids, []
        prompted = sorted(set(obj.points) | obj.mask_prompt_frames | set(obj.conditioning))
        del state.objects[obj_id]
        updated = []
        if need_output and state.objects:
            updated = [(t, self._frame_masks(state, t)) for t in prompted]
        return state.obj_ids, updated

    # ------------------------------------------------------------------ tracking
    def _commit_pending(self, state: VideoInferenceState) -> None:
        """Encode prompted frames into memory (official `propagate_in_video_preflight`)."""
        if not state.objects:
            raise ValueError("no object has prompts yet: add points, a box or a mask first")
        commit_pending(self.tracker, state.objects.values(), lambda t: self._features(state, t))
        for obj in state.objects.values():
            if not obj.conditioning:
                raise ValueError(f"object {obj.obj_id} has no prompt on any frame")

    @inference_method
    def propagate_in_video(
        self,
        inference_state: VideoInferenceState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list[int], Tensor]]:
        """Track every object through the video; yields (frame_idx, obj_ids, (N,1,H,W) logits)."""
        state = inference_state
        self._commit_pending(state)
        order = processing_order(state, start_frame_idx, max_frame_num_to_track, reverse)
        for frame_idx in order:
            objects = list(state.objects.values())
            to_track = [obj for obj in objects if frame_idx not in obj.conditioning]
            if to_track:
                features = self._features(state, frame_idx)
                outputs = self.tracker.track(
                    features, to_track, frame_idx, reverse, state.num_frames
                )
                for obj, out in zip(to_track, outputs):
                    obj.tracked[frame_idx] = out
            for obj in objects:
                obj.frames_tracked[frame_idx] = reverse
                obj.retain(frame_idx, self.retention, self.model.num_maskmem)
            yield frame_idx, state.obj_ids, self._frame_masks(state, frame_idx)


def processing_order(
    state: VideoInferenceState,
    start_frame_idx: int | None,
    max_frame_num_to_track: int | None,
    reverse: bool,
) -> range:
    """Frames visited by `propagate_in_video` (official semantics)."""
    if start_frame_idx is None:
        start_frame_idx = min(t for obj in state.objects.values() for t in obj.conditioning)
    if max_frame_num_to_track is None:
        max_frame_num_to_track = state.num_frames
    if reverse:
        end = max(start_frame_idx - max_frame_num_to_track, 0)
        # Starting at frame 0 there is nothing before it to track.
        return range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
    end = min(start_frame_idx + max_frame_num_to_track, state.num_frames - 1)
    return range(start_frame_idx, end + 1)
