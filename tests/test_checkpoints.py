"""Checkpoint registry and download: a real HTTP server on 127.0.0.1 serves the micro checkpoint."""

from __future__ import annotations

import http.server
import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sam2_video import checkpoints
from sam2_video.checkpoints import (
    CheckpointDownloadError,
    CheckpointNotFoundError,
    default_checkpoint_path,
    download_checkpoint,
    ensure_checkpoint,
    official_checkpoint,
)
from sam2_video.config import available_configs, load_config

MICRO_CKPT = Path(__file__).parent / "fixtures" / "reference" / "micro" / "sam2.1_micro.pt"
SCRIPT = Path(__file__).resolve().parent.parent / "checkpoints" / "download_ckpts.sh"
TIMEOUT_S = 5.0


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /good.pt (micro checkpoint), /truncated.pt (half the bytes, full length
    announced), /page.html (an HTML body with status 200), /tensor.pt (a torch file that is not
    a {"model": state_dict} checkpoint), anything else 404."""

    payload = b""
    tensor_file = b""

    def do_GET(self) -> None:
        if self.path == "/good.pt":
            self._send(200, self.payload, len(self.payload))
        elif self.path == "/truncated.pt":
            self._send(200, self.payload[: len(self.payload) // 2], len(self.payload))
            self.close_connection = True
        elif self.path == "/tensor.pt":
            self._send(200, self.tensor_file, len(self.tensor_file))
        elif self.path == "/page.html":
            body = b"<html><body>Access denied</body></html>"
            self._send(200, body, len(body), content_type="text/html")
        else:
            self.send_error(404, "Not Found")

    def _send(
        self, status: int, body: bytes, length: int, content_type: str = "application/octet-stream"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    _Handler.payload = MICRO_CKPT.read_bytes()
    buffer = io.BytesIO()
    torch.save(torch.zeros(3), buffer)
    _Handler.tensor_file = buffer.getvalue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=TIMEOUT_S)


@pytest.fixture()
def ckpt_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "ckpts"
    monkeypatch.setenv(checkpoints.CHECKPOINT_DIR_ENV, str(directory))
    return directory


# --- registry ---------------------------------------------------------------------------


def test_registry_covers_every_official_config() -> None:
    official = [name for name in available_configs() if name.startswith(("sam2_", "sam2.1_hiera"))]
    assert sorted(checkpoints.OFFICIAL_CHECKPOINTS) == sorted(official)
    assert len(official) == 8
    for name, entry in checkpoints.OFFICIAL_CHECKPOINTS.items():
        load_config(name)  # every registry key is a real config
        generation = name.split("_hiera_")[0]
        date = {"sam2": "072824", "sam2.1": "092824"}[generation]
        assert re.fullmatch(
            rf"https://dl\.fbaipublicfiles\.com/segment_anything_2/{date}/"
            rf"{re.escape(generation)}_hiera_(tiny|small|base_plus|large)\.pt",
            entry.url,
        )
    urls = [entry.url for entry in checkpoints.OFFICIAL_CHECKPOINTS.values()]
    assert len(set(urls)) == 8


def test_aliases_and_filenames() -> None:
    assert official_checkpoint("sam2.1_hiera_tiny") == official_checkpoint("sam2.1_hiera_t")
    assert official_checkpoint("sam2_hiera_b+").filename == "sam2_hiera_base_plus.pt"
    assert official_checkpoint("sam2.1_micro") is None


def test_download_script_fetches_the_registry_files() -> None:
    text = SCRIPT.read_text()
    sizes = text.split('SIZES="', 1)[1].split('"', 1)[0].split()
    assert sizes == ["tiny", "small", "base_plus", "large"]
    for entry in checkpoints.OFFICIAL_CHECKPOINTS.values():
        base, filename = entry.url.rsplit("/", 1)
        assert base in text
        assert filename.rsplit("_hiera_", 1)[0] + "_hiera_$size.pt" in text


def test_default_path_follows_env(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_checkpoint_path("sam2.1_hiera_t") == ckpt_dir / "sam2.1_hiera_tiny.pt"
    assert default_checkpoint_path("sam2.1_micro") == ckpt_dir / "sam2.1_micro.pt"
    monkeypatch.delenv(checkpoints.CHECKPOINT_DIR_ENV)
    assert default_checkpoint_path("sam2_hiera_l") == SCRIPT.parent / "sam2_hiera_large.pt"


# --- download ---------------------------------------------------------------------------


def test_download_is_byte_identical(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "sub" / "model.pt"
    assert download_checkpoint(f"{server_url}/good.pt", dest, timeout=TIMEOUT_S) == dest
    assert dest.read_bytes() == MICRO_CKPT.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.pt"]
    assert "100%" in capsys.readouterr().err


def test_download_without_progress_is_silent(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{server_url}/good.pt"
    download_checkpoint(url, tmp_path / "m.pt", progress=False, timeout=TIMEOUT_S)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("truncated.pt", "truncated"),
        ("missing.pt", "HTTP 404"),
        ("tensor.pt", "not a SAM 2 checkpoint"),
        ("page.html", r"did not return a PyTorch checkpoint \(the body starts with b'<html>"),
    ],
)
def test_failed_download_leaves_nothing(
    server_url: str, tmp_path: Path, route: str, message: str
) -> None:
    dest = tmp_path / "model.pt"
    with pytest.raises(CheckpointDownloadError, match=message):
        download_checkpoint(f"{server_url}/{route}", dest, progress=False, timeout=TIMEOUT_S)
    assert list(tmp_path.iterdir()) == []  # neither dest nor the temp file


def test_failed_download_keeps_existing_dest(server_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"previous")
    with pytest.raises(CheckpointDownloadError):
        download_checkpoint(f"{server_url}/truncated.pt", dest, progress=False, timeout=TIMEOUT_S)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_unreachable_server_is_a_download_error(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback is closed in test environments: connection refused.
    with pytest.raises(CheckpointDownloadError, match="failed"):
        download_checkpoint("http://127.0.0.1:9/x.pt", tmp_path / "x.pt", timeout=TIMEOUT_S)
    assert list(tmp_path.iterdir()) == []


# --- ensure_checkpoint ------------------------------------------------------------------


def test_missing_checkpoint_explains_how_to_get_it(ckpt_dir: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as info:
        ensure_checkpoint("sam2.1_hiera_t", None, download=False)
    text = str(info.value)
    assert str(ckpt_dir / "sam2.1_hiera_tiny.pt") in text
    assert "checkpoints/download_ckpts.sh" in text
    assert "--download" in text
    assert not ckpt_dir.exists()


def test_missing_sam2_checkpoint_points_to_all(ckpt_dir: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="download_ckpts.sh --all"):
        ensure_checkpoint("sam2_hiera_l", None, download=False)


def test_existing_checkpoint_is_returned(tmp_path: Path) -> None:
    assert ensure_checkpoint("sam2.1_micro", MICRO_CKPT, download=False) == MICRO_CKPT


def test_config_without_official_checkpoint(ckpt_dir: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no official checkpoint"):
        ensure_checkpoint("sam2.1_micro", None, download=True)


def test_ensure_downloads_official_file(
    server_url: str, ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point the sam2.1_hiera_t entry at the local server; the file name comes from the URL.
    local = checkpoints.OfficialCheckpoint("sam2.1_hiera_t", f"{server_url}/good.pt")
    monkeypatch.setitem(checkpoints.OFFICIAL_CHECKPOINTS, "sam2.1_hiera_t", local)
    path = ensure_checkpoint("sam2.1_hiera_tiny", None, download=True)
    assert path == ckpt_dir / "good.pt"
    assert path.read_bytes() == MICRO_CKPT.read_bytes()


# --- serve --------------------------------------------------------------------------------


def test_serve_download_fetches_only_its_model(
    server_url: str, ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamer import cli
    from streamer.service import serve

    local = checkpoints.OfficialCheckpoint("sam2.1_micro", f"{server_url}/good.pt")
    monkeypatch.setitem(checkpoints.OFFICIAL_CHECKPOINTS, "sam2.1_micro", local)
    served = {}
    monkeypatch.setattr(serve, "serve", lambda settings, **kw: served.update(kw, settings=settings))
    assert cli.main(["serve", "--model", "sam2.1_micro", "--device", "cpu", "--download"]) == 0
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["good.pt"]  # that one file only
    assert [spec.label for spec in served["models"]] == ["cpu:0"]


def test_serve_without_download_says_how(ckpt_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from streamer import cli

    assert cli.main(["serve", "--model", "sam2.1_hiera_t", "--device", "cpu"]) == cli.EXIT_BAD_INPUT
    assert "--download" in capsys.readouterr().err


def test_serve_unknown_model_is_reported_as_such(capsys: pytest.CaptureFixture) -> None:
    from streamer import cli

    assert cli.main(["serve", "--model", "sam2.1_hiera_tinyy"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "sam2.1_hiera_tinyy" in err and "checkpoint" not in err.lower()
