"""Ultralytics' SAM 2 names and files, and configs inferred from a checkpoint's keys and shapes.

The oracle: Ultralytics builds its own SAM 2 with random weights and saves it as it saves its
releases (`{"model": state_dict}` named `sam2_t.pt`); our model loads that file with the config
inferred from it, and its masks must equal `ultralytics.SAM(file)(image, bboxes=, points=,
labels=)` on the same image and prompts.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ultralytics_env import import_ultralytics

from sam2_video.build import (
    CheckpointError,
    build_sam2,
    ensure_model_checkpoint,
    infer_config,
    read_state_dict,
)
from sam2_video.checkpoints import (
    CheckpointNotFoundError,
    default_checkpoint_path,
    official_checkpoint,
)
from sam2_video.config import ULTRALYTICS_NAMES, ConfigError, load_config
from sam2_video.predictors.image import SAM2ImagePredictor

REFERENCE = Path(__file__).parent / "fixtures" / "reference"
MICRO_CKPT = REFERENCE / "micro" / "sam2.1_micro.pt"
PHOTO = Path(__file__).parent / "data" / "truck.jpg"
# Measured on an Intel Xeon (2 threads): 1 pixel of 1,048,576 differs on the box prompt of
# sam2_t (a logit within float32 rounding of 0), 0 on the others; scores agree to 1e-6.
MAX_PIXEL_DISAGREEMENT = 1e-5
SCORE_TOLERANCE = 1e-4


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("sam2_t.pt", "sam2_hiera_t"),
        ("sam2_s", "sam2_hiera_s"),
        ("sam2_b.pt", "sam2_hiera_b+"),
        ("sam2.1_l.pt", "sam2.1_hiera_l"),
        ("sam2.1_b", "sam2.1_hiera_b+"),
    ],
)
def test_ultralytics_names_are_model_names(name: str, config: str) -> None:
    assert load_config(name).name == config
    entry = official_checkpoint(name)
    assert entry is not None and entry.config_name == config
    short = name.removesuffix(".pt")
    assert entry.url == f"https://github.com/ultralytics/assets/releases/download/v8.4.0/{short}.pt"
    assert default_checkpoint_path(name).name == f"{short}.pt"


def test_all_eight_ultralytics_names_are_known() -> None:
    assert sorted(ULTRALYTICS_NAMES) == sorted(
        f"{g}_{s}" for g in ("sam2", "sam2.1") for s in ("t", "s", "b", "l")
    )
    with pytest.raises(ConfigError, match="sam2.1_b.pt"):
        load_config("sam2_x.pt")


def test_missing_ultralytics_file_says_how_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAM2_STREAM_CHECKPOINT_DIR", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match=r"--download.*releases/download/v8.4.0"):
        ensure_model_checkpoint("sam2.1_t.pt", None, download=False)


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""
    requested: list[str] = []

    def do_GET(self) -> None:
        self.requested.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def release_server() -> Iterator[str]:
    _OneFile.body = MICRO_CKPT.read_bytes()
    _OneFile.requested = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OneFile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_fetches_the_ultralytics_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release_server: str
) -> None:
    """--download asks Ultralytics' release for `sam2_t.pt` and saves it under that name (a
    local server stands in for GitHub, serving the micro checkpoint)."""
    from sam2_video import checkpoints

    entry = checkpoints.ULTRALYTICS_CHECKPOINTS["sam2_t"]
    monkeypatch.setitem(
        checkpoints.ULTRALYTICS_CHECKPOINTS,
        "sam2_t",
        checkpoints.OfficialCheckpoint(entry.config_name, f"{release_server}/sam2_t.pt"),
    )
    monkeypatch.setenv("SAM2_STREAM_CHECKPOINT_DIR", str(tmp_path))
    path = ensure_model_checkpoint("sam2_t.pt", None, download=True)
    assert path == tmp_path / "sam2_t.pt" and _OneFile.requested == ["/sam2_t.pt"]
    assert path.read_bytes() == MICRO_CKPT.read_bytes()


def _shapes_of(config_name: str) -> dict[str, torch.Tensor]:
    manifest = json.loads((REFERENCE / "state_dict" / f"{config_name}.json").read_text())
    return {
        key: torch.empty(entry["shape"], device="meta")
        for key, entry in manifest["state_dict"].items()
    }


@pytest.mark.parametrize(
    "config_name",
    [f"{g}_hiera_{s}" for g in ("sam2", "sam2.1") for s in ("t", "s", "b+", "l")],
)
def test_config_is_inferred_from_official_shapes(config_name: str) -> None:
    """The official state dicts' keys and shapes (manifests of Meta's files) name their model."""
    assert infer_config(_shapes_of(config_name)).name == config_name


def test_bare_checkpoint_path_builds_its_model(tmp_path: Path) -> None:
    renamed = tmp_path / "my_weights.pt"  # a name that says nothing about the model
    renamed.write_bytes(MICRO_CKPT.read_bytes())
    for model in (build_sam2(str(renamed), device="cpu"), build_sam2(None, renamed, "cpu")):
        assert model.config.name == "sam2.1_micro"
        expected = read_state_dict(MICRO_CKPT)
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert ensure_model_checkpoint(str(renamed), None, download=False) == renamed


def test_unknown_state_dict_names_the_closest_models() -> None:
    state = read_state_dict(MICRO_CKPT)
    state.pop("no_obj_embed_spatial")
    with pytest.raises(CheckpointError, match=r"closest: sam2.1_micro \(1 keys/shapes differ\)"):
        infer_config(state, source="odd.pt")
    with pytest.raises(CheckpointError, match="needs a config or a checkpoint"):
        build_sam2(None)


def _ultralytics_state(size: str, generation: str) -> dict[str, torch.Tensor]:
    """Ultralytics' own SAM 2 (`build_sam2_t` / `_b`) with its random initialisation."""
    import_ultralytics()
    from ultralytics.models.sam import build as ubuild

    torch.manual_seed(0)
    state = {"t": ubuild.build_sam2_t, "b": ubuild.build_sam2_b}[size]().state_dict()
    if generation == "sam2.1":  # Ultralytics builds the 2.1 heads only when loading a file
        state["no_obj_embed_spatial"] = torch.randn(1, 64) * 0.02
        state["obj_ptr_tpos_proj.weight"] = torch.randn(64, 256) * 0.02
        state["obj_ptr_tpos_proj.bias"] = torch.zeros(64)
    return state


@pytest.mark.parametrize(
    ("size", "generation"),
    [
        ("t", "sam2"),
        ("t", "sam2.1"),
        pytest.param("b", "sam2", marks=pytest.mark.slow),  # 14x14 window position embedding
    ],
)
def test_masks_equal_ultralytics_sam(size: str, generation: str, tmp_path: Path) -> None:
    ultralytics = import_ultralytics()
    path = tmp_path / f"{generation}_{size}.pt"
    torch.save({"model": _ultralytics_state(size, generation)}, path)
    # A square 1024 image: Ultralytics letterboxes where Meta's transform stretches, so only a
    # square input feeds both models the same pixels.
    image = np.asarray(Image.open(PHOTO).convert("RGB").resize((1024, 1024)))  # RGB uint8

    ours = build_sam2(str(path), device="cpu")
    assert ours.config.name == load_config(path.name).name
    predictor = SAM2ImagePredictor(ours)
    predictor.set_image(image)
    theirs = ultralytics.SAM(str(path))

    box, point = [100, 200, 700, 800], [500, 500]
    prompts = [
        {"bboxes": [box]},
        {"points": [point], "labels": [1]},
        {"bboxes": [box], "points": [point], "labels": [1]},
    ]
    for prompt in prompts:
        result = theirs(image[..., ::-1].copy(), verbose=False, **prompt)[0]  # BGR in
        their_mask = result.masks.data.cpu().numpy().astype(bool)  # (1, H, W)
        masks, scores, _ = predictor.predict(
            point_coords=np.array(prompt["points"], np.float32) if "points" in prompt else None,
            point_labels=np.array(prompt["labels"]) if "labels" in prompt else None,
            box=np.array(box, np.float32) if "bboxes" in prompt else None,
            multimask_output=False,
        )
        assert masks.shape == their_mask.shape
        assert 0.01 < masks.mean() < 0.99, "a trivial mask would make the comparison vacuous"
        disagreement = float((masks.astype(bool) != their_mask).mean())
        assert disagreement <= MAX_PIXEL_DISAGREEMENT, (prompt, disagreement)
        assert abs(float(scores[0]) - float(result.boxes.conf[0])) < SCORE_TOLERANCE
