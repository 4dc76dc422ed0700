"""Import Ultralytics for tests: offline, quiet, its settings file in a temporary folder.

Ultralytics reads these variables once, when it is first imported, so every test module that
uses it goes through `import_ultralytics`. Tests skip with the reason where it is not installed
(it is in the `test` extra; AGPL-3.0, used only as a test oracle and an optional detector).
"""

from __future__ import annotations

import os
import tempfile
from types import ModuleType

import pytest

_CONFIG_DIR: tempfile.TemporaryDirectory | None = None


def import_ultralytics() -> ModuleType:
    """`ultralytics`, imported with no network, no settings file in $HOME and no banners."""
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = tempfile.TemporaryDirectory(prefix="ultralytics-settings-")
        os.environ.setdefault("YOLO_CONFIG_DIR", _CONFIG_DIR.name)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_VERBOSE", "False")
    from sam2_video.detect.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # parts of Ultralytics import torchvision
    return pytest.importorskip("ultralytics", reason="ultralytics is in the test extra")
