"""`auto_annotate` and YOLO segmentation labels, read back by Ultralytics' own dataset loader.

Photos: tests/data/truck.jpg and, where the shared media folder is beside the checkout, its
cars.jpg and groceries.jpg. Masks drawn back from the loaded polygons must match ours with
IoU >= 0.9 per object.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from ultralytics_env import import_ultralytics

from sam2_video import auto_annotate
from sam2_video.annotate import annotate_image, default_output_dir
from sam2_video.detect import load_detector
from sam2_video.predictors.image import SAM2ImagePredictor
from sam2_video.utils.polygons import polygon_to_mask, yolo_segment_line

ROOT = Path(__file__).resolve().parents[1]
MEDIA = [ROOT / "tests" / "data" / "truck.jpg"] + [
    folder / name
    for folder in (ROOT.parent / "shared" / "media", Path("/work/shared/media"))
    for name in ("cars.jpg", "groceries.jpg")
]
MIN_IOU = 0.9


def _photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in MEDIA:
        if path.is_file() and not (folder / path.name).exists():
            image = Image.open(path).convert("RGB")
            image.thumbnail((480, 480))  # small: the micro model and a CPU
            image.save(folder / path.name)
            out.append(folder / path.name)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _load_with_ultralytics(root: Path, names: dict[int, str]) -> list[dict]:
    """Labels as Ultralytics' YOLODataset reads them from a dataset YAML over `root`."""
    import_ultralytics()
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "names": names})
    )
    data = check_det_dataset(str(data_yaml), autodownload=False)
    dataset = YOLODataset(img_path=data["val"], data=data, task="segment", augment=False)
    return dataset.labels


def _shapes(h: int, w: int) -> list[np.ndarray]:
    """Asymmetric masks (an x/y mix-up or a wrong normaliser shows): an ellipse, an L and a
    mask in two pieces."""
    ellipse = np.zeros((h, w), np.uint8)
    cv2.ellipse(ellipse, (w // 3, h // 4), (w // 6, h // 10), 20, 0, 360, 1, -1)
    ell = np.zeros((h, w), bool)
    ell[h // 2 : h - 10, 10 : w // 4] = True
    ell[h - 60 : h - 10, 10 : w // 2] = True
    two = np.zeros((h, w), bool)
    two[20:80, w - 120 : w - 40] = True
    two[h // 2 : h // 2 + 50, w - 90 : w - 20] = True
    return [ellipse.astype(bool), ell, two]


def test_yolo_labels_round_trip_through_ultralytics_loader(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "images")
    assert photos
    ours = {}
    (tmp_path / "labels").mkdir()
    for k, photo in enumerate(photos):
        w, h = Image.open(photo).size
        masks = _shapes(h, w)
        ours[photo.stem] = masks
        lines = [yolo_segment_line((k + i) % 3, m) for i, m in enumerate(masks)]
        (tmp_path / "labels" / f"{photo.stem}.txt").write_text("\n".join(lines) + "\n")
    labels = _load_with_ultralytics(tmp_path, {0: "a", 1: "b", 2: "c"})
    assert len(labels) == len(photos)
    for label in labels:
        stem = Path(label["im_file"]).stem
        h, w = label["shape"]
        assert len(label["segments"]) == len(ours[stem])
        k = [p.stem for p in photos].index(stem)
        assert label["cls"].reshape(-1).tolist() == [(k + i) % 3 for i in range(3)]
        for segment, mask in zip(label["segments"], ours[stem]):
            drawn = polygon_to_mask(segment * np.array([w, h]), h, w)
            assert _iou(drawn, mask) >= MIN_IOU


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory) -> Path:
    ultralytics = import_ultralytics()
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolov8n.yaml")  # random weights; its boxes are what they are
    path = tmp_path_factory.mktemp("yolo") / "tiny_yolov8n.pt"
    model.save(str(path))
    return path


def test_auto_annotate_writes_labels_ultralytics_reads(micro_model, tiny_yolo, tmp_path):
    photos = _photos(tmp_path / "images")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    report = auto_annotate(
        tmp_path / "images", det_model=str(tiny_yolo), sam_model=micro_model, conf=1e-4,
        imgsz=320, max_det=5, device="cpu", output_dir=tmp_path / "labels", progress=False,
    )  # fmt: skip
    assert report.output_dir == tmp_path / "labels"
    assert sorted(p.stem for p in report.written) == sorted(p.stem for p in photos)
    assert list(report.errors) == [tmp_path / "images" / "broken.jpg"]
    assert "cannot decode" in report.errors[tmp_path / "images" / "broken.jpg"]
    (tmp_path / "images" / "broken.jpg").unlink()

    labels = _load_with_ultralytics(tmp_path, {i: f"class{i}" for i in range(80)})
    detector = load_detector(str(tiny_yolo), min_score=1e-4, imgsz=320, max_det=5)
    predictor = SAM2ImagePredictor(micro_model)
    checked = 0
    for label in labels:
        image = np.asarray(Image.open(label["im_file"]).convert("RGB"))
        found, masks = annotate_image(predictor, detector, image)
        h, w = label["shape"]
        # The loader drops rows whose class and box repeat (random boxes do) and sorts the
        # rest: every row it keeps must be one of our masks.
        unique = {yolo_segment_line(c, m) for c, m in zip(found.class_ids, masks)}
        assert 1 <= len(label["segments"]) <= len(unique)
        for segment, class_id in zip(label["segments"], label["cls"].reshape(-1)):
            drawn = polygon_to_mask(segment * np.array([w, h]), h, w)
            same_class = [m for c, m in zip(found.class_ids, masks) if c == class_id]
            assert max(_iou(drawn, m) for m in same_class) >= MIN_IOU
            checked += 1
    assert checked >= len(photos)


def test_default_output_folder_is_ultralytics(tmp_path: Path) -> None:
    assert default_output_dir(tmp_path / "images") == tmp_path / "images_auto_annotate_labels"
    shutil.rmtree(tmp_path, ignore_errors=True)
