"""Detectors (sam2_video.detect) and detector seeding of a streaming session.

Real models with random weights, no network: a tiny Grounding DINO saved to a folder
(transformers) and a YOLOv8n built from its yaml and saved as a .pt (Ultralytics). Seeds
and thresholds are fixed so that every test sees detections.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detect_fixtures import colour_blobs, failing
from PIL import Image
from tiny_detectors import save_tiny_grounding_dino, save_tiny_owlv2
from ultralytics_env import import_ultralytics

from sam2_video import SessionOptions, StreamingSession
from sam2_video.detect import Detections, DetectorError, load_detector, match_detections
from sam2_video.detect.callable import CallableDetector
from sam2_video.detect.text import parse_text_classes
from streamer.protocol import Detect, DetectOptions, ErrorCode, ProtocolError, parse_client_message
from streamer.sessions.detection import detect_steps

PHOTO = Path(__file__).parent / "data" / "truck.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB").resize((450, 300)))  # (300, 450, 3)


def test_detections_are_validated() -> None:
    with pytest.raises(DetectorError, match="disagree in length"):
        Detections(np.zeros((2, 4)), [0], [0.5, 0.5])
    with pytest.raises(DetectorError, match="non-finite"):
        Detections([[0, 0, np.nan, 1]], [0], [0.5])
    found = Detections([[1, 2, 3, 4]], [7], [0.5], {7: "cat"})
    assert found.label(0) == "cat" and found.boxes.dtype == np.float32 and len(found) == 1


def test_bad_detector_specs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="unknown detector 'not a detector'"):
        load_detector("not a detector")
    with pytest.raises(DetectorError, match="not found: /nonexistent/yolov8n.pt"):
        load_detector("/nonexistent/yolov8n.pt")
    with pytest.raises(DetectorError, match="empty text"):
        load_detector(str(tmp_path), text="   ")
    with pytest.raises(DetectorError, match="without a transformers config.json"):
        load_detector(str(tmp_path), text="person.")
    with pytest.raises(DetectorError, match="no class names"):
        parse_text_classes(" . , ")
    assert parse_text_classes("Person. car, person.") == ["person", "car"]


def test_blank_text_is_a_bad_message() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message('{"v": 1, "type": "detect", "text": " . "}', max_bytes=4096)
    assert info.value.code is ErrorCode.BAD_MESSAGE
    message = parse_client_message(
        '{"v": 1, "type": "detect", "text": "person.", "iou": 0.3}', max_bytes=4096
    )
    assert isinstance(message, Detect) and message.every_n_frames == 0 and message.iou == 0.3


def test_matching_rule() -> None:
    tracked = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    proposals = np.array([[21, 21, 40, 40], [100, 100, 120, 120], [0, 0, 9, 10]], np.float32)
    assert match_detections(proposals, tracked, 0.5).tolist() == [1, -1, 0]
    # One to one: a second proposal on the same object is a new object.
    assert match_detections(proposals[[2, 2]], tracked, 0.5).tolist() == [0, -1]
    assert match_detections(proposals, tracked[:0], 0.5).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError):
        match_detections(proposals, tracked, 0.0)


def test_callable_detector_shapes(photo) -> None:
    detector = load_detector(lambda image: ([[1, 1, 20, 20]], [3], [0.7], ["a", "b", "c", "d"]))
    assert isinstance(detector, CallableDetector)
    found = detector(photo)
    assert found.label(0) == "d" and found.scores.tolist() == [pytest.approx(0.7)]
    with pytest.raises(DetectorError, match="must return Detections"):
        load_detector(lambda image: "boxes")(photo)


def test_grounding_dino_text_detector(tmp_path: Path, photo) -> None:
    folder = save_tiny_grounding_dino(tmp_path / "gdino")
    detector = load_detector(str(folder), text="person. car.", min_score=0.0)
    found = detector(photo)
    assert len(found) == 30  # one per query at min_score 0
    assert set(found.names.values()) == {"person", "car"}
    assert {found.label(i) for i in range(len(found))} <= {"person", "car"}
    assert (found.boxes[:, 0::2] <= 450).all() and (found.boxes[:, 1::2] <= 300).all()
    assert (found.scores > 0).all()
    high = float(np.median(found.scores))
    assert 0 < len(load_detector(str(folder), text="person. car.", min_score=high)(photo)) < 30


def test_owlv2_text_detector(tmp_path: Path, photo) -> None:
    folder = save_tiny_owlv2(tmp_path / "owlv2")
    found = load_detector(str(folder), text="person. car.", min_score=0.0)(photo)
    assert len(found) == 16  # one per 16x16 patch of the 64x64 input
    assert found.names == {0: "person", 1: "car"} and set(found.class_ids.tolist()) <= {0, 1}
    # OWL pads the photo to a square: boxes come back in the photo's pixels, inside it.
    assert (found.boxes[:, 0::2] <= 450).all() and (found.boxes[:, 1::2] <= 300).all()
    assert (found.boxes >= 0).all() and (found.scores >= 0).all()


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory) -> Path:
    """YOLOv8n from its yaml (random weights, seed 0) with COCO's first names, saved as .pt."""
    ultralytics = import_ultralytics()
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolov8n.yaml")
    model.model.names = {i: f"class{i}" for i in range(80)} | {0: "person", 2: "car"}
    path = tmp_path_factory.mktemp("yolo") / "tiny_yolov8n.pt"
    model.save(str(path))
    return path


def test_yolo_detector(tiny_yolo: Path, photo) -> None:
    detector = load_detector(str(tiny_yolo), classes=["person", "car"], min_score=1e-4, imgsz=320)
    found = detector(photo)
    assert len(found) > 0 and set(found.class_ids.tolist()) <= {0, 2}
    assert found.names[0] == "person" and (found.scores >= 1e-4).all()
    with pytest.raises(DetectorError, match="has no class"):
        load_detector(str(tiny_yolo), classes=["unicorn"])


def _session(micro_model, frame: np.ndarray, max_objects: int = 4) -> StreamingSession:
    session = StreamingSession(micro_model, SessionOptions(max_objects=max_objects))
    session.add_frame(frame)
    return session


def _drain(steps):
    slices = 0
    while True:
        try:
            next(steps)
            slices += 1
        except StopIteration as stop:
            return stop.value, slices


def _scene() -> np.ndarray:
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[...] = (220, 30, 30)
    frame[90:140, 200:250] = (30, 220, 40)
    return frame


def test_detect_steps_seed_and_label(micro_model) -> None:
    frame = _scene()
    session = _session(micro_model, frame)
    labels: dict = {}
    outcome, slices = _drain(detect_steps(session, colour_blobs, frame, DetectOptions(), labels))
    assert len(outcome.obj_ids) == 2 and slices >= 1
    assert [labels[i].label for i in outcome.obj_ids] == ["red", "green"]  # best score first
    assert session.obj_ids == outcome.obj_ids


def test_failing_detector_fails_only_its_command(micro_model) -> None:
    frame = _scene()
    session = _session(micro_model, frame)
    with pytest.raises(ProtocolError) as info:
        _drain(detect_steps(session, failing, frame, DetectOptions(), {}))
    assert info.value.code is ErrorCode.DETECTION_FAILED and "exploded" in str(info.value)
    assert session.obj_ids == []
    assert session.add_frame(frame).frame_idx == 1  # the stream goes on


def test_a_thousand_detections_are_capped_by_the_object_limit(micro_model) -> None:
    frame = _scene()
    session = _session(micro_model, frame, max_objects=5)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 150, size=(1000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 100, size=(1000, 2))], axis=1)

    def crowd(image):
        return Detections(boxes, np.zeros(1000), rng.uniform(0.5, 1.0, 1000), {0: "person"})

    labels: dict = {}
    with pytest.raises(ProtocolError) as info:
        _drain(detect_steps(session, crowd, frame, DetectOptions(iou=1.0), labels))
    assert info.value.code is ErrorCode.TOO_MANY_OBJECTS
    assert "at most 5 objects" in str(info.value)
    assert len(session.obj_ids) == 5 and set(labels) == set(session.obj_ids)


def test_detector_pool_without_a_detector_answers_no_detector() -> None:
    from streamer.sessions.detection import DetectorPool

    with pytest.raises(ProtocolError) as info:
        DetectorPool(None, "cpu").get(DetectOptions(), request_id="d")
    assert info.value.code is ErrorCode.NO_DETECTOR and info.value.request_id == "d"
    with pytest.raises(ProtocolError) as info:
        DetectorPool("no such detector", "cpu").get(DetectOptions())
    assert info.value.code is ErrorCode.NO_DETECTOR and "unknown detector" in str(info.value)
    pool = DetectorPool("detect_fixtures:colour_blobs", "cpu")
    assert pool.get(DetectOptions()) is pool.get(DetectOptions())  # built once, then cached
