"""Segmentation on synthetic scenes: a garment on textured and gradient grounds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fmnist import segment
from fmnist.images import Limits, model_input, to_model_input

H, W = 533, 400
BOX = (120, 430, 90, 310)  # the garment's (top, bottom, left, right)


def scene(ground: str, seed: int = 0) -> np.ndarray:
    """A red T-shirt shape (H, W, 3) on a wooden, carpet or gradient ground, on a hanger."""
    rng = np.random.default_rng(seed)
    cols = np.arange(W)[None, :].repeat(H, 0)
    if ground == "wood":  # brown planks with grain
        base = 150 + 25 * np.sin(cols / 9.0) + rng.normal(0, 8, (H, W))
        rgb = np.stack([base, base * 0.75, base * 0.5], -1)
    elif ground == "carpet":  # grey-blue noise texture
        base = 110 + rng.normal(0, 25, (H, W))
        rgb = np.stack([base * 0.9, base * 0.95, base * 1.1], -1)
    else:  # a wall lit from one side
        base = 120 + 120 * cols / W
        rgb = np.stack([base, base, base * 0.95], -1)
    img = np.clip(rgb, 0, 255).astype(np.uint8)
    top, bottom, left, right = BOX
    shirt = np.array([[left + 60, top], [right - 60, top], [right, top + 60],
                      [right - 30, top + 100], [right - 40, bottom], [left + 40, bottom],
                      [left + 30, top + 100], [left, top + 60]], np.int32)  # fmt: skip
    cv2.fillPoly(img, [shirt], (200, 30, 40))
    cv2.line(img, (W // 2, top - 40), (W // 2, top), (60, 60, 60), 3)  # the hanger's hook
    return img


@pytest.mark.parametrize("ground", ["wood", "carpet", "gradient"])
def test_garment_box_is_recovered(ground: str) -> None:
    img = scene(ground)
    mask = segment.garment_mask(img)
    assert mask is not None
    ys, xs = np.nonzero(mask)
    found = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    # Within a few pixels of 533, the hanger's hook above the top edge cut away.
    tolerance = (6, 6, 6, 6)
    assert all(abs(a - b) <= t for a, b, t in zip(found, BOX, tolerance, strict=True)), found
    # The ground is gone: under 3 % of the mask lies outside the garment's box.
    top, bottom, left, right = BOX
    inside = mask[top:bottom, left:right].sum()
    assert mask.sum() - inside < 0.03 * mask.sum()


def test_isolate_paints_the_ground_plain_and_the_pipeline_sees_the_garment() -> None:
    img = scene("carpet")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    out, segmented = segment.isolate(img, grey, 24)
    assert segmented
    top, bottom = BOX[:2]
    assert (out[: top - 45] == 255).all() and (out[bottom + 5 :] == 255).all()
    x = to_model_input(img)
    cut = to_model_input(img, Limits(segment=False))
    # Segmented: the garment fills the frame's height, as in the dataset; unsegmented the
    # carpet's noise survives into the model's input.
    assert (x[:, 14] > 0).sum() >= 24
    assert not np.array_equal(x, cut)


def test_model_input_says_which_photos_were_segmented() -> None:
    """Only a photo cut out of a cluttered ground counts as one (it gets the photo offsets)."""
    img = scene("carpet")
    x, segmented = model_input(img)
    assert segmented and np.array_equal(x, to_model_input(img))
    assert not model_input(img, Limits(segment=False))[1]
    plain = np.full((300, 200, 3), 255, np.uint8)  # a product shot on white
    plain[50:250, 50:150] = (20, 20, 20)
    assert not model_input(plain)[1]
    dataset = np.zeros((28, 28), np.uint8)  # the dataset's convention passes through
    dataset[4:24, 8:20] = 200
    x, segmented = model_input(dataset)
    assert np.array_equal(x, dataset) and not segmented


def test_segmented_photos_are_narrowed_to_the_flat_lay_width() -> None:
    img = scene("carpet")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    out, _ = segment.isolate(img, grey, 24)
    h, w = grey.shape
    assert out.shape == (h, round(w * segment.FLAT_LAY_WIDTH)) and out.shape[1] < w
    top, bottom, left, right = BOX  # the garment's columns move in by the same factor
    cols = np.flatnonzero((out[top:bottom] < 128).any(0))
    assert abs(cols[0] - left * segment.FLAT_LAY_WIDTH) <= 6
    assert abs(cols[-1] + 1 - right * segment.FLAT_LAY_WIDTH) <= 6


def test_segmented_photos_fill_less_of_the_canvas() -> None:
    """A segmented garment's longer side spans FLAT_LAY_FILL of the 28 pixels, a product
    shot's all of them."""
    img = scene("carpet")
    x, segmented = model_input(img)
    full = model_input(img, Limits(flat_lay_fill=1.0))[0]
    assert segmented and 0 < segment.FLAT_LAY_FILL < 1

    def span(a: np.ndarray) -> int:  # the garment's longer side, in pixels
        rows, cols = np.flatnonzero((a > 30).any(1)), np.flatnonzero((a > 30).any(0))
        return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)

    assert span(full) == 28 and span(x) == round(28 * segment.FLAT_LAY_FILL)
    plain = np.full((300, 200, 3), 255, np.uint8)  # a product shot on white
    plain[50:250, 50:150] = (20, 20, 20)
    x, segmented = model_input(plain)
    assert not segmented and span(x) == 28


@pytest.mark.parametrize(
    "kw",
    [
        {"flat_lay_fill": 1.2},
        {"flat_lay_fill": 0.0},
        {"flat_lay_fill": float("nan")},
        {"flat_lay_width": -1.0},
    ],
)
def test_a_fill_or_width_out_of_range_is_refused(kw: dict) -> None:
    """A fill over 1 would crop the garment and one of 0 erase it: refused, saying why."""
    name = next(iter(kw))
    with pytest.raises(ValueError, match=rf"Limits\.{name} must be above 0.*got"):
        Limits(**kw)


def test_plain_and_small_images_are_left_alone() -> None:
    plain = np.full((300, 200, 3), 255, np.uint8)
    plain[50:250, 50:150] = (20, 20, 20)
    grey = cv2.cvtColor(plain, cv2.COLOR_RGB2GRAY)
    assert segment.segment(plain, grey, 24).reason == "plain background"
    out, segmented = segment.isolate(plain, grey, 24)
    assert np.array_equal(out, grey) and not segmented
    tiny = np.zeros((28, 28, 3), np.uint8)
    assert segment.segment(tiny, tiny[..., 0], 24).reason == "small image"


def test_a_darker_photo_of_a_floor_is_still_cut_and_a_product_shot_is_not() -> None:
    """A darker exposure shrinks the floor's grey-level spread; it must not pass for plain."""
    rng = np.random.default_rng(0)
    for factor in (1.0, 0.7, 0.5):
        img = (scene("carpet") * factor).astype(np.uint8)
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        assert segment.segment(img, grey, 24).reason == "segmented", factor
    shot = np.clip(rng.normal(245, 3, (300, 200, 3)), 0, 255).astype(np.uint8)  # JPEG noise
    shot[50:250, 50:150] = (20, 20, 20)
    grey = cv2.cvtColor(shot, cv2.COLOR_RGB2GRAY)
    assert segment.segment(shot, grey, 24).reason == "plain background"


def test_the_same_photo_gives_the_same_cut() -> None:
    img = scene("wood", seed=3)
    a, b = segment.garment_mask(img), segment.garment_mask(img)
    assert a is not None and np.array_equal(a, b)


def jpeg(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` through JPEG at quality 90, as an app would save it."""
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def garment_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """The (top, bottom, left, right) of what isolate keeps of a photo, in its own pixels."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out, segmented = segment.isolate(rgb, grey, 24, width=1.0)
    assert segmented
    ys, xs = np.nonzero(np.abs(out.astype(int) - out[0, 0]) > 30)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


@pytest.mark.parametrize(
    ("top", "side", "shade"),
    [(16, 16, 255), (16, 16, 0), (40, 40, 255), (0, 67, 255), (0, 67, 0), (12, 12, 200)],
    ids=["white frame", "black frame", "wide frame", "white bars", "black bars", "grey frame"],
)
def test_a_frame_or_bars_around_a_photo_are_cut_off(top: int, side: int, shade: int) -> None:
    """A plain frame (or the bars of a square canvas) made the border plain: the photo went
    unsegmented, or kept part of its floor. The garment is found as in the photo alone."""
    img = scene("carpet")
    framed = cv2.copyMakeBorder(img, top, top, side, side, cv2.BORDER_CONSTANT, value=[shade] * 3)
    framed = jpeg(framed)
    rows, cols = segment.frame(cv2.cvtColor(framed, cv2.COLOR_RGB2GRAY), 12)
    assert abs(rows.start - top) <= 3 and abs(framed.shape[0] - rows.stop - top) <= 3
    assert abs(cols.start - side) <= 3 and abs(framed.shape[1] - cols.stop - side) <= 3
    alone = garment_box(jpeg(img))
    cut = garment_box(framed)  # in the cut photo's pixels: a few lines fewer than the frame
    shift = (rows.start - top, rows.start - top, cols.start - side, cols.start - side)
    # Within two of GrabCut's working pixels (150 px for the longer side: 3.6 px here).
    assert all(abs(a - b - s) <= 8 for a, b, s in zip(alone, cut, shift, strict=True))


def test_a_product_shot_a_wide_garment_and_a_grey_image_keep_their_ground() -> None:
    """A plain ground that ends in a garment is no frame, nor are a grey image's bars."""
    shot = np.full((300, 240, 3), 250, np.uint8)
    shot[40:260, 60:180] = (200, 30, 40)  # framed by the ground on all sides
    shot = cv2.copyMakeBorder(shot, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    bag = np.full((300, 240, 3), 250, np.uint8)
    cv2.rectangle(bag, (0, 60), (239, 240), (200, 30, 40), -1)  # spans the width,
    cv2.circle(bag, (0, 60), 30, (250, 250, 250), -1)  # its corners rounded
    cv2.circle(bag, (239, 240), 30, (250, 250, 250), -1)
    grey_scene = np.repeat(cv2.cvtColor(scene("carpet"), cv2.COLOR_RGB2GRAY)[..., None], 3, 2)
    grey_bars = cv2.copyMakeBorder(grey_scene, 0, 0, 67, 67, cv2.BORDER_CONSTANT, value=[0] * 3)
    for img in (shot, bag, grey_bars):
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        rgb, kept = segment.unframe(img, grey, 12)
        assert kept is grey and rgb is img
    assert segment.frame(cv2.cvtColor(bag, cv2.COLOR_RGB2GRAY), 12) is None
    assert segment.frame(cv2.cvtColor(grey_bars, cv2.COLOR_RGB2GRAY), 12) is not None


def test_a_textured_square_item_on_white_is_no_photo_in_a_frame() -> None:
    """A folded garment or a bag with square corners, nearly filling a product shot: its
    ground ends in a full line with full corners. Off-centre it is no even padding; centred,
    nothing is found inside it, and the shot is taken as it was, plain ground and all."""
    rng = np.random.default_rng(0)
    for left, noise in ((20, 40), (30, 20)):  # (20: margins 20 and 40), (30: even margins)
        shot = np.full((320, 320, 3), 255, np.uint8)
        texture = rng.integers(-noise, noise, (260, 260, 1))
        shot[30:290, left : left + 260] = np.clip(np.array([120, 80, 50]) + texture, 0, 255)
        grey = cv2.cvtColor(shot, cv2.COLOR_RGB2GRAY)
        out, segmented = segment.isolate(shot, grey, 24)
        assert np.array_equal(out, grey) and not segmented, left
