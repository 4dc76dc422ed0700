"""Frame-by-frame tracking of a live stream with bounded memory.

A `StreamingSession` is fed one frame at a time (`add_frame`) and answers every frame with a
`FrameResult`. Prompts (`add_points`, `add_box`, `add_mask`) apply to the current frame and are
answered at once. Memory per object is bounded by a `RetentionPolicy`, so a session runs at
constant memory however long the stream.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Generator

import numpy as np
import torch
from torch import Tensor

from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
from sam2_video.precision import inference_method
from sam2_video.predictors.auto_seed import AutoSeeder, AutoSeedOptions
from sam2_video.predictors.multi_stream import track_streams
from sam2_video.predictors.stream_objects import StreamObjects
from sam2_video.predictors.stream_results import frame_result
from sam2_video.predictors.stream_types import (
    FrameResult,
    FrameSizeError,
    NoFrameError,
    SessionOptions,
    TooManyObjectsError,
)
from sam2_video.tracking.memory_bank import (
    FrameOutput,
    ObjectMemory,
    PendingOutput,
    RetentionPolicy,
)
from sam2_video.tracking.prompts import (
    UnknownObjectError,
    check_mask_size,
    commit_pending,
    merge_points,
    prepare_mask_prompt,
    prepare_point_prompt,
)
from sam2_video.tracking.tracker import FrameTracker, StaticShapes, TrackerOptions, TrackGroup
from sam2_video.utils.steps import drain
from sam2_video.utils.transforms import frame_to_chw, preprocess_frame

logger = logging.getLogger(__name__)

# The session's types live in stream_types.py; these names are part of this module's API.
__all__ = [
    "FrameResult",
    "FrameSizeError",
    "NoFrameError",
    "SessionOptions",
    "StreamingSession",
    "TooManyObjectsError",
    "UnknownObjectError",
]


class StreamingSession:
    """Tracks objects through a live stream, one frame at a time.

    Not thread-safe: one worker thread drives a session. Device policy: frames, features and
    memories live on the model's device; results are returned as CPU numpy arrays.
    """

    def __init__(self, model: SAM2Model, options: SessionOptions | None = None) -> None:
        self.model = model
        self.options = options or SessionOptions()
        opts = self.options
        static = StaticShapes(opts.max_conditioning_frames) if opts.static_shapes else None
        self.tracker = FrameTracker(
            model,
            TrackerOptions.for_memory(self.options.memory, self.options.fill_hole_area),
            static_shapes=static,
        )
        window = max(model.num_maskmem - 1, model.config.max_obj_ptrs_in_encoder - 1)
        self.retention = RetentionPolicy(
            max_conditioning_frames=self.options.max_conditioning_frames,
            max_frame_distance=window,
        )
        self._objects = StreamObjects(self.options.max_objects, self.options.memory)
        self.frame_idx = -1
        self.frame_hw: tuple[int, int] | None = None
        self._pts: float | int | None = None
        self._features: ImageFeatures | None = None
        # The current frame (3, H, W), uint8 (or float in [0, 1] if given so), kept for
        # auto-seeding on demand; a copy, as callers may reuse their frame buffers.
        self._frame: Tensor | None = None
        self._incoming: Tensor | None = None  # prepared, not yet tracked (3, H, W)
        self._incoming_hw: tuple[int, int] | None = None
        self._seeder: AutoSeeder | None = None  # built on first use

    # ------------------------------------------------------------------ lifecycle
    @property
    def objects(self) -> OrderedDict[int, ObjectMemory]:
        """Per-object memory by id, in the order objects were added."""
        return self._objects.memories

    @property
    def obj_ids(self) -> list[int]:
        return self._objects.ids

    def new_object_id(self) -> int:
        """An id never used in this session (ids are not reused, even after removal)."""
        return self._objects.new_id()

    def reset(self) -> None:
        """Forget every object and frame; the next frame may have any size."""
        self._objects.clear()
        self.frame_idx = -1
        self.frame_hw = None
        self._pts = None
        self._features = None
        self._frame = None
        self._incoming = None
        self._incoming_hw = None

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking an object (raises UnknownObjectError for an id it does not track)."""
        self._objects.remove(obj_id)

    # ------------------------------------------------------------------ frames
    @inference_method
    def add_frame(self, frame: np.ndarray | Tensor, pts: float | int | None = None) -> FrameResult:
        """Track every object on the next frame.

        frame: (H, W, 3) uint8 RGB numpy array, or a (3, H, W) / (H, W, 3) tensor (uint8, or
            float in [0, 1]) possibly already on the model's device.
        """
        # The same step a scheduler runs over several sessions' frames at once, with one.
        result = track_streams([self], [frame], [pts])[0]
        if isinstance(result, Exception):
            raise result
        return result

    # The three phases of the step (`track_streams`): check and prepare the frame, the
    # objects to track on it, store what the batched forward returned.
    def prepare_frame(self, frame: np.ndarray | Tensor) -> Tensor:
        """Check the next frame and return its model input (1, 3, S, S) float32.

        Also encodes the memory of the previous frame's prompts. Raises ValueError (or
        FrameSizeError) for a frame of the wrong type or size; the session is then unchanged.
        """
        chw = frame_to_chw(frame)  # validates shape / dtype; (3, H, W) uint8 or float
        hw = (int(chw.shape[1]), int(chw.shape[2]))
        if self.frame_hw is not None and hw != self.frame_hw:
            raise FrameSizeError(
                f"frame is {hw[1]}x{hw[0]} but the stream is "
                f"{self.frame_hw[1]}x{self.frame_hw[0]}; reset the session to change resolution"
            )
        self._commit_pending()
        # Auto-seeding reads the full-resolution frame later; keep it only when seeding may run
        # (a copy, since callers may reuse their frame buffers).
        self._incoming = chw.clone() if self._may_seed() else None
        self._incoming_hw = hw
        return preprocess_frame(chw, self.model.image_size, self.tracker.device)

    def _may_seed(self) -> bool:
        return self.options.auto_seed is not None or self.options.seed_on_demand

    def track_group(self, frame_row: int) -> TrackGroup:
        """The objects to track on the prepared frame, which is row `frame_row` of a batch."""
        return TrackGroup(frame_row, list(self.objects.values()), self.frame_idx + 1)

    def finish_frame(
        self,
        features: ImageFeatures,
        outputs: list[FrameOutput],
        pts: float | int | None = None,
        *,
        seed: bool = True,
    ) -> FrameResult:
        """Store the tracked `outputs` (one per object, from `track_group`) of the prepared
        frame and return its result.

        features: the frame's own features (batch 1). seed: run auto-seeding now when this is
        a seeding frame; with False the caller runs `auto_seed_steps` (see `seeding_due`).
        """
        if self._incoming_hw is None:
            raise RuntimeError("finish_frame without prepare_frame")
        self.frame_hw, self._incoming_hw = self._incoming_hw, None
        self._frame, self._incoming = self._incoming, None
        self.frame_idx += 1
        self._pts = pts
        self._features = features
        objects = list(self.objects.values())
        for obj, out in zip(objects, outputs):
            obj.tracked[self.frame_idx] = out
            obj.frames_tracked[self.frame_idx] = False
            obj.retain(self.frame_idx, self.retention, self.model.num_maskmem)
        lost = self._objects.count_absences(
            objects, outputs, self.options.lost_after, self.options.drop_lost
        )
        if seed and self.seeding_due:
            self._seed()
        return self._result(lost)

    @property
    def seeding_due(self) -> bool:
        """True when the current frame is one the session's `auto_seed` options seed."""
        return self._features is not None and self._is_seeding_frame()

    def _commit_pending(self) -> None:
        """Encode the memory of prompts given on the previous frame before moving on."""
        features = self._features
        if features is None:
            return
        # Prompts apply to the current frame only, so every pending output is on it.
        for obj, frame_idx in commit_pending(
            self.tracker, self.objects.values(), lambda _: features
        ):
            obj.frames_tracked[frame_idx] = False
            obj.retain(frame_idx, self.retention, self.model.num_maskmem)

    # ------------------------------------------------------------------ prompts
    def _require_frame(self) -> ImageFeatures:
        if self._features is None or self.frame_hw is None:
            raise NoFrameError("no frame yet: prompts apply to the current frame")
        return self._features

    def _current_hw(self) -> tuple[int, int]:
        """The current frame's (H, W); raises NoFrameError before the first frame."""
        if self.frame_hw is None:
            raise NoFrameError("no frame yet: prompts apply to the current frame")
        return self.frame_hw

    @inference_method
    def add_points(
        self,
        obj_id: int | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None = None,
        clear_old_points: bool = True,
    ) -> FrameResult:
        """Clicks (and/or a box) for an object on the current frame; None creates a new id.

        points: (P, 2) float (x, y) pixels of the current frame; labels: (P,) 1 pos / 0 neg.
        box: (4,) xyxy pixels. Returns the current frame's result with the refined mask.
        Bad input raises ValueError and leaves the session as it was.
        """
        features = self._require_frame()
        coords, point_labels = prepare_point_prompt(
            points,
            labels,
            box,
            self._current_hw(),
            self.model.image_size,
            device=self.tracker.device,
        )
        if box is not None and not clear_old_points:
            raise ValueError("a box must come first: use clear_old_points=True with a box")
        obj = self._objects.for_prompt(obj_id, self._current_hw())
        coords, point_labels = merge_points(
            obj, self.frame_idx, coords, point_labels, clear_old_points
        )
        output, is_init = self.tracker.prompt_points(
            features, obj, self.frame_idx, coords, point_labels, None
        )
        obj.points[self.frame_idx] = (coords, point_labels)
        self._store_prompt(obj, output, is_init)
        return self._result([])

    def add_box(self, obj_id: int | None, box: np.ndarray) -> FrameResult:
        """A box (4,) xyxy pixels for an object on the current frame."""
        return self.add_points(obj_id, None, None, box=box)

    @inference_method
    def add_mask(self, obj_id: int | None, mask: np.ndarray | Tensor) -> FrameResult:
        """A mask (H, W) bool at the current frame's size, taken as the object's answer."""
        self._prompt_mask(obj_id, mask)
        return self._result([])

    def _prompt_mask(self, obj_id: int | None, mask: np.ndarray | Tensor) -> None:
        features = self._require_frame()
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        check_mask_size(tuple(mask_t.shape), self.frame_hw)
        model_mask = prepare_mask_prompt(mask_t, self.model.image_size, self.tracker.device)
        obj = self._objects.for_prompt(obj_id, self._current_hw())
        output, is_init = self.tracker.prompt_mask(features, obj, self.frame_idx, model_mask)
        obj.points.pop(self.frame_idx, None)
        self._store_prompt(obj, output, is_init)

    def _store_prompt(self, obj: ObjectMemory, output: FrameOutput, is_init: bool) -> None:
        is_cond = is_init or self.options.corrections_as_conditioning
        obj.pending[self.frame_idx] = PendingOutput(output, is_cond)
        self._objects.prompted(obj)

    # ------------------------------------------------------------------ auto-seeding
    @inference_method
    def auto_seed(self, options: AutoSeedOptions | None = None) -> FrameResult:
        """Track, as new objects, what the mask generator finds on the current frame.

        Masks already covered by tracked objects are skipped. options: for this call (default:
        the session's `auto_seed` options, else `AutoSeedOptions()`). Stops quietly at the
        objects cap.
        """
        self._require_frame()
        self._seed(options)
        return self._result([])

    def _is_seeding_frame(self) -> bool:
        seed = self.options.auto_seed
        if seed is None:
            return False
        return self.frame_idx == 0 or (
            seed.reseed_every is not None and self.frame_idx % seed.reseed_every == 0
        )

    def _seed(self, options: AutoSeedOptions | None = None) -> list[int]:
        """Add one object per kept mask on the current frame; returns the new ids."""
        return drain(self._seed_steps(options))

    @inference_method
    def auto_seed_steps(
        self, options: AutoSeedOptions | None = None, lost: list[int] | None = None
    ) -> Generator[None, None, FrameResult]:
        """`auto_seed` in slices: a generator that runs one slice of the mask generator (one
        image embedding or one point batch) per `next()` and returns the current frame's
        result, with the new objects, when exhausted (`StopIteration.value`).

        A scheduler interleaves the slices with other sessions' frames. The session must not
        be fed frames or prompts until the generator is exhausted. lost: ids to report lost in
        the final result (those of the frame being seeded).
        """
        self._require_frame()
        yield from self._seed_steps(options)
        return self._result(list(lost or []))

    def _seed_steps(self, options: AutoSeedOptions | None) -> Generator[None, None, list[int]]:
        options = options or self.options.auto_seed or AutoSeedOptions()
        if self._seeder is None or self._seeder.options != options:
            self._seeder = AutoSeeder(self.model, options)
        cap = self.options.max_objects
        if options.max_objects is not None:
            cap = min(cap, options.max_objects)
        room = cap - len(self.objects)
        if room <= 0:
            return []
        image = self._frame  # (3, H, W)
        if image is None:
            raise NoFrameError(
                "this session keeps no frame for seeding (seed_on_demand=False, no auto_seed)"
            )
        if image.dtype != torch.uint8:
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        args = (image.permute(1, 2, 0).cpu().numpy(), self._tracked_union(), room)
        # The generator reuses the frame's encoder features: no second backbone pass.
        seeds = yield from self._seeder.propose_steps(*args, features=self._require_frame())
        new_ids = []
        for seed in seeds:
            obj_id = self.new_object_id()
            self._prompt_mask(obj_id, seed.mask)
            new_ids.append(obj_id)
        if new_ids:
            logger.info("frame %d: auto-seeded objects %s", self.frame_idx, new_ids)
        return new_ids

    def _tracked_union(self) -> np.ndarray:
        """(H, W) bool: pixels inside any object's mask on the current frame."""
        h, w = self._current_hw()
        outputs = [obj.output_at(self.frame_idx) for obj in self.objects.values()]
        if not outputs:
            return np.zeros((h, w), dtype=bool)
        return (self.tracker.upsample(outputs, (h, w)) > 0).any(dim=0).cpu().numpy()

    # ------------------------------------------------------------------ results
    def current_result(self) -> FrameResult:
        """The current frame's result (e.g. after removing an object)."""
        self._require_frame()
        return self._result([])

    def _result(self, lost: list[int]) -> FrameResult:
        objects = list(self.objects.values())
        return frame_result(
            self.tracker, objects, self.frame_idx, self._pts, self._current_hw(), self.options, lost
        )
