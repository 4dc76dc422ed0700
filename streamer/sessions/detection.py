"""Detector seeding of a session: run the detector, match, prompt new objects, keep labels.

Runs on the scheduler thread as a sliced task (one slice for the detector, then a few box
prompts per slice). Matching follows `sam2_video.detect.matching`: a detection whose box
overlaps a tracked object's box with IoU >= `iou` is that object (it keeps its id and takes
the detection's label); the others become new objects prompted with their box, best score
first, up to the session's object limit.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from sam2_video import StreamingSession
from sam2_video.detect import Detections, Detector, DetectorError, ObjectLabel, load_detector
from sam2_video.detect.matching import match_detections
from streamer.protocol import Detect, DetectOptions, ErrorCode, ProtocolError, RequestId
from streamer.sessions.prompts import PromptOutcome

logger = logging.getLogger(__name__)

# New objects prompted per slice: each is one mask-decoder pass.
PROMPTS_PER_SLICE = 4
# Detectors a scheduler keeps loaded at once (one per distinct classes/text).
DETECTOR_CACHE_SIZE = 4


@dataclass
class SessionDetection:
    """A session's detection state (scheduler thread only).

    options: the active `detect` settings (None: no detector seeding). labels: obj_id -> what
    the detector said it is. image: the last tracked frame, (H, W, 3) uint8 RGB, which a
    `detect` command runs on. runs / failures: counters.
    """

    options: DetectOptions | None = None
    labels: dict[int, ObjectLabel] = field(default_factory=dict)
    image: np.ndarray | None = None
    runs: int = 0
    failures: int = 0

    def due(self, frame_idx: int) -> bool:
        """Whether the periodic detection runs on frame `frame_idx`."""
        if self.options is None:
            return False
        every = self.options.every_n_frames
        return frame_idx == 0 if every == 0 else frame_idx % every == 0

    def forget(self, obj_id: int | None = None) -> None:
        """Drop one object's label, or every label (reset)."""
        if obj_id is None:
            self.labels.clear()
        else:
            self.labels.pop(obj_id, None)


class DetectorPool:
    """The detectors of one scheduler, built on first use from the server's `--detector`.

    spec: what `load_detector` takes (a name, path, or "package.module:function"); None: no
    detector, and `detect` is answered with `no_detector`. Built detectors are kept (LRU, at
    most `DETECTOR_CACHE_SIZE`) per distinct classes/text.
    """

    def __init__(self, spec: str | Callable | None, device: str) -> None:
        self.spec = spec
        self.device = device
        self._cache: OrderedDict[tuple, Detector] = OrderedDict()

    def get(self, options: DetectOptions, request_id: RequestId = None) -> Detector:
        """The detector for `options` (built on first use); ProtocolError `no_detector` when
        the server has none or it cannot be built."""
        if self.spec is None:
            raise ProtocolError(
                ErrorCode.NO_DETECTOR,
                "this server has no detector (start it with --detector)",
                request_id,
            )
        key = (tuple(options.classes or ()), options.text)
        detector = self._cache.get(key)
        if detector is None:
            try:
                detector = load_detector(
                    self.spec,
                    classes=list(options.classes) if options.classes else None,
                    text=options.text,
                    min_score=0.0,  # each request's min_score applies after
                    device=self.device,
                )
            except DetectorError as exc:
                raise ProtocolError(ErrorCode.NO_DETECTOR, str(exc), request_id) from exc
            self._cache[key] = detector
            while len(self._cache) > DETECTOR_CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return detector


def detect_steps(
    stream: StreamingSession,
    detector: Detector,
    image: np.ndarray,
    options: DetectOptions,
    labels: dict[int, ObjectLabel],
    request_id: RequestId = None,
) -> Generator[None, None, PromptOutcome]:
    """Detect on `image` (the stream's current frame) and seed from it, in slices.

    Returns the current frame's outcome with the new objects' ids. Raises ProtocolError:
    `detection_failed` if the detector raises or returns garbage, `too_many_objects` when
    the session's object limit left detections untracked (the best ones were added).
    """
    yield  # the detector is one slice of its own
    try:
        found = detector(image)
        if not isinstance(found, Detections):
            raise DetectorError(f"the detector returned {type(found).__name__}, not Detections")
    except Exception as exc:
        raise ProtocolError(
            ErrorCode.DETECTION_FAILED, f"detector failed: {type(exc).__name__}: {exc}", request_id
        ) from exc
    h, w = image.shape[:2]
    keep = found.scores >= options.min_score
    if options.classes:
        wanted = {c.lower() for c in options.classes}
        keep &= np.array([found.label(i).lower() in wanted for i in range(len(found))], bool)
    boxes = found.boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h - 1)
    keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = [i for i in np.argsort(-found.scores, kind="stable") if keep[i]]

    current = stream.current_result()
    present = [i for i in range(len(current.obj_ids)) if current.masks[i].any()]
    tracked_boxes = current.boxes[present] if present else np.zeros((0, 4), np.float32)
    matched = match_detections(boxes[order], tracked_boxes, options.iou)
    new = []
    for det, match in zip(order, matched):
        label = ObjectLabel(found.label(det), int(found.class_ids[det]), float(found.scores[det]))
        if match >= 0:
            labels[int(current.obj_ids[present[match]])] = label
        else:
            new.append((det, label))
    room = max(0, stream.options.max_objects - len(stream.obj_ids))
    created: list[int] = []
    for n, (det, label) in enumerate(new[:room]):
        if n and n % PROMPTS_PER_SLICE == 0:
            yield
        result = stream.add_box(None, boxes[det])
        obj_id = int(result.obj_ids[-1])
        labels[obj_id] = label
        created.append(obj_id)
    if created:
        logger.info("frame %d: detector seeded objects %s", stream.frame_idx, created)
    if len(new) > room:
        raise ProtocolError(
            ErrorCode.TOO_MANY_OBJECTS,
            f"tracked {len(created)} of {len(new)} new detections (the best scores): the "
            f"session tracks at most {stream.options.max_objects} objects",
            request_id,
        )
    return PromptOutcome(stream.current_result(), obj_ids=created)


def detect_command_steps(
    state: SessionDetection, pool: DetectorPool, stream: StreamingSession, message: Detect
) -> Generator[None, None, PromptOutcome]:
    """The `detect` command's sliced work: seed from the current frame now; every_n_frames > 0
    also sets the session's periodic detection (0 stops it). Raises ProtocolError before any
    work (`not_ready`, `no_detector`)."""
    if state.image is None or stream.frame_hw is None:
        raise ProtocolError(ErrorCode.NOT_READY, "no frame processed yet", message.id)
    options = DetectOptions(**message.model_dump(include=set(DetectOptions.model_fields)))
    detector = pool.get(options, message.id)
    state.options = options if options.every_n_frames > 0 else None
    state.runs += 1
    return detect_steps(stream, detector, state.image, options, state.labels, message.id)
