"""The package's top-level names (a newcomer's first import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_top_level_imports_in_a_fresh_interpreter():
    """Each name resolves to the class or function of its module, whatever is imported first."""
    code = (
        "from sam2_video import build_sam2, SAM2ImagePredictor, SAM2AutomaticMaskGenerator, "
        "SAM2VideoPredictor, StreamingSession\n"
        "import sam2_video.build, sam2_video.predictors.image, sam2_video.predictors.amg, "
        "sam2_video.predictors.video, sam2_video.predictors.streaming\n"
        "assert build_sam2 is sam2_video.build.build_sam2\n"
        "assert SAM2ImagePredictor is sam2_video.predictors.image.SAM2ImagePredictor\n"
        "assert SAM2AutomaticMaskGenerator is "
        "sam2_video.predictors.amg.SAM2AutomaticMaskGenerator\n"
        "assert SAM2VideoPredictor is sam2_video.predictors.video.SAM2VideoPredictor\n"
        "assert StreamingSession is sam2_video.predictors.streaming.StreamingSession\n"
    )
    # From the repository root, so the checkout under test is the one imported.
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_unknown_name_is_an_attribute_error():
    import sam2_video

    with pytest.raises(AttributeError, match="no_such_thing"):
        sam2_video.no_such_thing  # noqa: B018
    assert "StreamingSession" in dir(sam2_video)


def test_every_export_is_its_modules_object():
    """`_EXPORTS` names the real module of each name (no compatibility re-exports)."""
    import importlib

    import sam2_video

    assert set(sam2_video._EXPORTS) == set(sam2_video.__all__)
    for name, module in sam2_video._EXPORTS.items():
        obj = getattr(sam2_video, name)
        assert obj is getattr(importlib.import_module(module), name)
        assert obj.__module__ == module, f"{name} is defined in {obj.__module__}, not {module}"
