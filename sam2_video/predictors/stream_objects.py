"""The objects of one stream: their ids, when they join, and how long each has been absent."""

from __future__ import annotations

from collections import OrderedDict

import torch

from sam2_video.predictors.stream_types import TooManyObjectsError
from sam2_video.tracking.dam4sam import new_object_memory
from sam2_video.tracking.memory_bank import FrameOutput, ObjectMemory
from sam2_video.tracking.prompts import UnknownObjectError


class StreamObjects:
    """Per-object memories of a stream, in the order objects were added.

    Ids are never reused, even after removal. A new object joins (`register`) only once its
    first prompt has succeeded, so a failed prompt leaves nothing half-made and uses up no id.
    """

    def __init__(self, max_objects: int, memory: str = "sam2") -> None:
        self.max_objects = max_objects
        self.memory = memory  # the kind of memory new objects get ("sam2" / "dam4sam")
        self.memories: OrderedDict[int, ObjectMemory] = OrderedDict()
        self._next_id = 1
        self._absent_for: dict[int, int] = {}  # id -> consecutive frames with score <= 0

    @property
    def ids(self) -> list[int]:
        return list(self.memories)

    def new_id(self) -> int:
        """An id never used in this stream, used up now."""
        obj_id = self.peek_id()
        self._next_id = obj_id + 1
        return obj_id

    def peek_id(self) -> int:
        """The id `new_id` would give, without using it up."""
        candidate = self._next_id
        while candidate in self.memories:
            candidate += 1
        return candidate

    def for_prompt(self, obj_id: int | None, frame_hw: tuple[int, int]) -> ObjectMemory:
        """The memory a prompt is for: the object's own, or a new one not yet registered
        (None: with a fresh id) for a stream of frame_hw (H, W). Raises TooManyObjectsError at
        `max_objects`."""
        obj = None if obj_id is None else self.memories.get(obj_id)
        if obj is not None:
            return obj
        if len(self.memories) >= self.max_objects:
            raise TooManyObjectsError(
                f"session already tracks {len(self.memories)} objects (max_objects)"
            )
        obj_id = self.peek_id() if obj_id is None else obj_id
        return new_object_memory(obj_id, self.memory, frame_hw)

    def prompted(self, obj: ObjectMemory) -> None:
        """A prompt for `obj` succeeded: it counts as present, and joins if it is new."""
        self._absent_for[obj.obj_id] = 0
        if obj.obj_id in self.memories:
            return
        if obj.obj_id == self.peek_id():
            self._next_id = obj.obj_id + 1  # a fresh id is used up
        self.memories[obj.obj_id] = obj

    def remove(self, obj_id: int) -> None:
        if obj_id not in self.memories:
            raise UnknownObjectError(f"unknown object id {obj_id}; known: {self.ids}")
        del self.memories[obj_id]
        self._absent_for.pop(obj_id, None)

    def clear(self) -> None:
        """Forget every object (ids stay used up)."""
        self.memories.clear()
        self._absent_for.clear()

    def count_absences(
        self,
        objects: list[ObjectMemory],
        outputs: list[FrameOutput],
        lost_after: int | None,
        drop_lost: bool,
    ) -> list[int]:
        """Update absence counts from one frame's outputs; returns the ids that became lost
        (absent for exactly `lost_after` frames), removing them with `drop_lost`."""
        if lost_after is None or not outputs:
            return []
        lost = []
        # One copy of every score to the host (a device sync), not one per object.
        scores = torch.stack([out.object_score.reshape(()) for out in outputs]).tolist()
        for obj, score in zip(objects, scores):
            absent = score <= 0
            count = self._absent_for.get(obj.obj_id, 0) + 1 if absent else 0
            self._absent_for[obj.obj_id] = count
            if count == lost_after:
                lost.append(obj.obj_id)
        if drop_lost:
            for obj_id in lost:
                self.remove(obj_id)
        return lost
