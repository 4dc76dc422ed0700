"""Overlay rendering: tint inside masks only, stable colours per id, outlines, labels."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.overlay import OverlayStyle, draw_overlay, object_color

GREY = 100


def _frame(height: int = 90, width: int = 160) -> np.ndarray:
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def _box_mask(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_blends_object_colour_inside_mask_and_leaves_outside_alone():
    image = _frame()
    mask = _box_mask(90, 160, 20, 60, 30, 90)
    plain = OverlayStyle(alpha=0.5, draw_outline=False, draw_ids=False)
    out = draw_overlay(image, mask[None], [3], style=plain)

    expected = np.round(0.5 * GREY + 0.5 * np.array(object_color(3), dtype=np.float64))
    np.testing.assert_allclose(out[mask], np.broadcast_to(expected, (mask.sum(), 3)), atol=1)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    np.testing.assert_array_equal(image, _frame())  # input untouched


def test_colour_is_a_function_of_the_id_not_of_the_order():
    image = _frame()
    a = _box_mask(90, 160, 0, 30, 0, 40)
    b = _box_mask(90, 160, 50, 90, 100, 160)
    plain = OverlayStyle(draw_outline=False, draw_ids=False)
    first = draw_overlay(image, np.stack([a, b]), [7, 2], style=plain)
    swapped = draw_overlay(image, np.stack([b, a]), [2, 7], style=plain)
    np.testing.assert_array_equal(first, swapped)
    assert object_color(7) == object_color(7)
    assert len({object_color(i) for i in range(1, 33)}) == 32


def test_outline_and_label_draw_in_object_colour():
    image = _frame(180, 320)
    mask = _box_mask(180, 320, 60, 140, 100, 260)
    with_outline = draw_overlay(image, mask[None], [5], style=OverlayStyle(draw_ids=False))
    fill_only = draw_overlay(
        image, mask[None], [5], style=OverlayStyle(draw_outline=False, draw_ids=False)
    )
    border = mask & ~np.pad(mask, 1)[2:, 1:-1]  # bottom edge row of the box
    assert not np.array_equal(with_outline[border], fill_only[border])

    labelled = draw_overlay(image, mask[None], [5], style=OverlayStyle(draw_outline=False))
    label_region = labelled[60:80, 100:130]  # label sits at the mask's top-left corner
    assert (label_region == 0).all(axis=-1).any()  # dark label box
    assert not np.array_equal(label_region, fill_only[60:80, 100:130])


def test_masks_of_another_resolution_are_resized():
    image = _frame(90, 160)
    small = _box_mask(45, 80, 10, 30, 15, 45)  # same box at half resolution
    style = OverlayStyle(draw_outline=False, draw_ids=False)
    out = draw_overlay(image, small[None], [1], style=style)
    tinted = (out != GREY).any(axis=-1)
    np.testing.assert_array_equal(tinted, _box_mask(90, 160, 20, 60, 30, 90))


def test_no_objects_and_empty_masks_return_a_copy():
    image = _frame()
    out = draw_overlay(image, np.zeros((0, 90, 160), dtype=bool), [])
    np.testing.assert_array_equal(out, image)
    assert out is not image
    out = draw_overlay(image, np.zeros((1, 90, 160), dtype=bool), [1])
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(
    ("image", "masks", "ids"),
    [
        (np.zeros((9, 16), dtype=np.uint8), np.zeros((1, 9, 16), bool), [1]),
        (np.zeros((9, 16, 3), dtype=np.float32), np.zeros((1, 9, 16), bool), [1]),
        (np.zeros((9, 16, 3), dtype=np.uint8), np.zeros((2, 9, 16), bool), [1]),
        (np.zeros((9, 16, 3), dtype=np.uint8), np.zeros((1, 1, 9, 16), bool), [1]),
    ],
)
def test_rejects_malformed_inputs(image, masks, ids):
    with pytest.raises(ValueError):
        draw_overlay(image, masks, ids)


def test_style_validation():
    with pytest.raises(ValueError):
        OverlayStyle(alpha=1.5)
    with pytest.raises(ValueError):
        OverlayStyle(outline_thickness=0)
