"""Any image a user has -> the 28x28 uint8 input the model expects. NumPy, Pillow, OpenCV.

The pipeline follows the one Zalando used to build Fashion-MNIST (arXiv 1708.07747,
section 2), so that a phone photo looks like the training data:

1. decode (PNG, JPEG, WebP, GIF first frame, BMP, TIFF; AVIF and HEIC where fmnist.formats
   finds their decoders), honour EXIF orientation, composite transparency onto white (the
   product photos' background), convert to grey;
2. cut off a plain frame or bars that an app added around a colour photo, separate the
   garment from a cluttered background (floors, beds, hangers: fmnist.segment,
   OpenCV's GrabCut), paint the rest one plain shade and narrow the photo to 0.9 of its
   width (clothes laid flat spread wider than product shots); plain backgrounds are left alone
   (:func:`picture_input` says which were cut out: a model's photo offsets apply to them,
   and their garment fills 26 of the 28 pixels in step 5, fmnist.segment.FLAT_LAY_FILL);
3. find the background level from the border pixels and invert when the garment is darker
   than its background (the dataset shows garments light on black);
4. trim the background to the garment's bounding box, with a tolerance for noise and shadows;
5. resize the longest edge to 28 pixels keeping the aspect ratio, sharpen, and centre on a
   black 28x28 canvas by bounding box (the dataset's centring: the odd spare pixel goes
   left/top, measured on the test set).

A 28x28 grey image already in the dataset's convention passes through unchanged. Every
bad input raises :class:`ImageError`; torch is never imported here, so the server and the
ONNX path run without it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from . import formats, segment
from .errors import ImageError
from .segment import FLAT_LAY_FILL, FLAT_LAY_WIDTH, background

SIZE = 28  # the model's input is SIZE x SIZE pixels
WORK_SIZE = 448  # photos over twice this longest edge (px) are reduced to it: 16x the output
ImageInput = (
    str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray
)


@dataclass(frozen=True)
class Limits:
    """What an input may cost before it is refused, and the pipeline's tolerances."""

    max_bytes: int = 20 * 2**20  # encoded file size; phone JPEGs are 2-8 MB
    max_pixels: int = 50_000_000  # width * height, checked from the header before decoding
    tolerance: int = 24  # grey levels from the background still background, plus 3x its noise
    min_fraction: float = 0.01  # rows/columns with fewer garment pixels than this are noise
    segment: bool = True  # separate the garment from a cluttered background (fmnist.segment)
    flat_lay_width: float = FLAT_LAY_WIDTH  # segmented photos are narrowed to this
    flat_lay_fill: float = FLAT_LAY_FILL  # and fill this much of the canvas's side
    heif: bool = True  # HEIC and AVIF too, whose decoders trust the header's size (formats)

    def __post_init__(self) -> None:
        for name, value, top in (("flat_lay_width", self.flat_lay_width, float("inf")),
                                 ("flat_lay_fill", self.flat_lay_fill, 1.0)):  # fmt: skip
            if not 0 < value <= top:
                most = "" if top == float("inf") else f" and at most {top:g}"
                raise ValueError(
                    f"Limits.{name} must be above 0{most}, got {value!r}: segmented photos "
                    f"are scaled by it (default {getattr(Limits, name)})."
                )


DEFAULT_LIMITS = Limits()


def to_model_input(
    image: ImageInput, limits: Limits = DEFAULT_LIMITS, name: str | None = None
) -> np.ndarray:
    """Turn a path, bytes, file object, PIL image or array into a (28, 28) uint8 array.

    ``name`` (e.g. an upload's file name) stands for bytes and file objects in messages.
    """
    return model_input(image, limits, name)[0]


def model_input(
    image: ImageInput, limits: Limits = DEFAULT_LIMITS, name: str | None = None
) -> tuple[np.ndarray, bool]:
    """:func:`to_model_input`'s array, and whether the garment was cut out of a cluttered
    background (fmnist.segment); :func:`picture_input` also says if the image was changed."""
    return picture_input(image, limits, name)[:2]


def picture_input(
    image: ImageInput, limits: Limits = DEFAULT_LIMITS, name: str | None = None
) -> tuple[np.ndarray, bool, bool]:
    """:func:`model_input`'s array and flag, and whether the pipeline changed the image
    (False: already in the dataset's convention, passed through as it is)."""
    grey, segmented = load_grey(image, limits, name)
    x = prepare(grey, limits, limits.flat_lay_fill if segmented else 1.0)
    return x, segmented, not (grey.shape == x.shape and np.array_equal(grey, x))


# ---------------------------------------------------------------- decoding


def load_grey(
    image: ImageInput, limits: Limits = DEFAULT_LIMITS, name: str | None = None
) -> tuple[np.ndarray, bool]:
    """Decode any input to a grey uint8 array (H, W), transparency composited onto white,
    the ground painted plain when it is cluttered; and whether it was (segmented)."""
    if isinstance(image, np.ndarray):
        return _array_to_grey(image, limits)
    if isinstance(image, Image.Image):
        _check_pixels(image.size, limits, "the image")
        return _pil_to_grey(image, limits)
    if isinstance(image, str | os.PathLike):
        data, name = _read_path(Path(image), limits), str(image)
    elif isinstance(image, bytes | bytearray | memoryview):
        data, name = bytes(image), name or "the data"
    elif hasattr(image, "read"):
        data = image.read(limits.max_bytes + 1)
        name = name or str(getattr(image, "name", "the file"))
        if not isinstance(data, bytes):
            raise ImageError(
                f"{name} was opened in text mode; open it in binary mode (open(path, 'rb')).",
                "bad_input",
            )
    else:
        raise ImageError(
            f"Cannot read an image from a {type(image).__name__}: expected a path, bytes, a "
            "binary file object, a PIL image or a numpy array.",
            "bad_input",
        )
    return _pil_to_grey(decode(data, limits, name=str(name)), limits)


def _read_path(path: Path, limits: Limits) -> bytes:
    """Read a file's bytes, refusing directories, missing files and files over the limit."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageError(
                f"{path} is a directory; pass an image file (the CLI accepts folders).",
                "unreadable_path",
            )
        if size > limits.max_bytes:
            raise _too_large(str(path), size, limits)
        with open(path, "rb") as f:  # a device or a pipe has no size: read to the limit only
            data = f.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise _too_large(str(path), None, limits)
        return data
    except OSError as e:
        raise ImageError(
            f"Cannot read {path}: {e.strerror or e}. Check the path and its permissions.",
            "unreadable_path",
        ) from None


def _too_large(name: str, size: int | None, limits: Limits) -> ImageError:
    has = "more bytes" if size is None else f"{size:,d} bytes, more"  # None: a stream's
    return ImageError(
        f"{name} has {has} than the limit of {limits.max_bytes:,d} bytes; "
        "resize or recompress the image (a 1000-pixel JPEG is plenty for 28x28).",
        "too_large",
    )


def _check_pixels(size: tuple[int, int], limits: Limits, name: str) -> None:
    """Refuse empty and oversized images from their dimensions alone."""
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(
            f"{name} is {w}x{h} pixels: it has no pixels to classify; expected at least 1x1.",
            "zero_size",
        )
    if w * h > limits.max_pixels:
        raise ImageError(
            f"{name} is {w}x{h} = {w * h:,d} pixels, more than the limit of "
            f"{limits.max_pixels:,d} pixels (a decompression bomb or a huge scan); resize it "
            "below the limit first.",
            "too_many_pixels",
        )


# Pillow's plugins raise a range of exception types on malformed data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError, AttributeError, RuntimeError)  # fmt: skip


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS, name: str = "the data") -> Image.Image:
    """Open encoded image bytes with Pillow, checking size and pixel limits before decoding."""
    if not data:
        raise ImageError(
            f"{name} is empty (0 bytes): expected the bytes of an image file; copy or upload "
            "it again.",
            "empty",
        )
    if len(data) > limits.max_bytes:
        raise _too_large(name, len(data), limits)
    try:
        im = Image.open(io.BytesIO(data), formats=formats.decoders(limits.heif))
    except Image.DecompressionBombError as e:  # Pillow's own, far above ours: say ours
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,d} pixels" if found else "too many pixels"
        raise ImageError(
            f"{name} declares {size}, more than the limit of {limits.max_pixels:,d} pixels (a "
            "decompression bomb or a huge scan); resize it below the limit first.",
            "too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        raise formats.unidentified(data, name, limits.heif) from None
    except _DECODE_ERRORS as e:
        raise ImageError(
            f"{name} has a corrupt image header ({type(e).__name__}: {e}); re-export the image.",
            "not_an_image",
        ) from None
    _check_pixels(im.size, limits, name)
    if im.format in ("JPEG", "MPO"):
        # Large photos decode at 1/2, 1/4 or 1/8 scale directly: a 12 MP photo ~10x faster.
        # Only the luma channel (the same ITU-R 601 grey as convert("L")) unless the
        # segmentation needs the colours.
        grey_only = im.mode == "RGB" and not limits.segment
        im.draft("L" if grey_only else None, (WORK_SIZE, WORK_SIZE))
    try:
        im.load()
    except _DECODE_ERRORS as e:
        raise ImageError(
            f"{name} is truncated or corrupt ({type(e).__name__}: {str(e).strip()}): copy or "
            "upload it again, or export it again if the copy is whole.",
            "truncated",
        ) from None
    return im


def _pil_to_grey(im: Image.Image, limits: Limits) -> tuple[np.ndarray, bool]:
    """Orient, composite, segment and convert a PIL image to grey uint8 (H, W); segmented?"""
    with contextlib.suppress(*_DECODE_ERRORS):  # a corrupt EXIF block: keep the orientation
        im = ImageOps.exif_transpose(im)
    if max(im.size) > 2 * WORK_SIZE:
        im = im.convert("I") if im.mode.startswith("I;16") else im.copy()  # I;16 won't resize
        im.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)  # cheap, exact averaging
    mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
        alpha = rgba[..., 3] / 255.0
        luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601
        grey = luma * alpha + 255.0 * (1.0 - alpha)  # onto white, like the product photos
        return _to_uint8(grey), False
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im, dtype=np.float64)
        # 16-bit images span 0..65535; float images are taken as 0..1 when they fit in it.
        scale = 1 / 257 if mode.startswith("I") else (255.0 if np.nanmax(a, initial=0) <= 1 else 1)
        return _to_uint8(a * scale), False
    if mode in ("LAB", "HSV"):
        return np.asarray(im.getchannel(0 if mode == "LAB" else 2)), False  # lightness/value
    try:
        grey = np.asarray(im.convert("L"))
    except ValueError:
        grey = np.asarray(im.convert("RGB").convert("L"))
    if not limits.segment:
        return grey, False
    rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # GrabCut needs colour
    return segment.isolate(rgb, grey, limits.tolerance, limits.flat_lay_width)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _array_to_grey(a: np.ndarray, limits: Limits) -> tuple[np.ndarray, bool]:
    """Check a numpy image (H, W), (H, W, 1|3|4) and convert it to grey uint8 (H, W)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(
            f"An image array must be (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, got shape "
            f"{a.shape}; pass one image (a batch goes to Classifier.predict).",
            "bad_array",
        )
    _check_pixels((a.shape[1], a.shape[0]), limits, f"the {a.shape} array")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = _to_uint8(a / 257.0)
    elif a.dtype.kind == "f":
        finite = a[np.isfinite(a)]
        if finite.size < a.size or a.min() < 0 or a.max() > 1:
            found = [f"{a.size - finite.size:,d} values that are not finite numbers"]
            found = found[: finite.size < a.size]
            if finite.size:
                found.append(f"values from {finite.min():.3g} to {finite.max():.3g}")
            raise ImageError(
                f"A float image array must hold finite values in [0, 1], found "
                f"{' and '.join(found)}; divide 8-bit pixels by 255 or pass uint8.",
                "bad_array",
            )
        a = _to_uint8(a * 255.0)
    else:
        raise ImageError(
            f"An image array must be uint8, uint16 or float in [0, 1], got {a.dtype}; "
            "convert it, e.g. arr.astype(np.uint8).",
            "bad_array",
        )
    if a.ndim == 2:
        return a, False
    mode = "RGB" if a.shape[2] == 3 else "RGBA"
    return _pil_to_grey(Image.fromarray(np.ascontiguousarray(a), mode), limits)


# ---------------------------------------------------------------- the pipeline


def garment_is_dark(histogram: np.ndarray, bg: float, tolerance: float) -> bool:
    """True when the pixels that differ from the background are, on average, darker.

    ``histogram`` (256,) counts the pixels of each grey level.
    """
    diff = np.arange(256) - bg
    fg = np.abs(diff) > tolerance
    return float(histogram[fg] @ diff[fg]) < 0


def bounding_box(mask: np.ndarray, min_fraction: float) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), exclusive ends, of the rows and columns with garment.

    A row (column) counts when more than ``min_fraction`` of its pixels are garment, so
    specks of noise and thin shadows at the edges are trimmed away.
    """
    h, w = mask.shape
    rows = np.flatnonzero(mask.sum(1) > min_fraction * w)
    cols = np.flatnonzero(mask.sum(0) > min_fraction * h)
    if rows.size == 0 or cols.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def prepare(grey: np.ndarray, limits: Limits = DEFAULT_LIMITS, fill: float = 1.0) -> np.ndarray:
    """Grey uint8 (H, W) -> the model's (28, 28) uint8, garment light on black, its longer
    side ``fill`` of the canvas's (an image already in the dataset's convention as it is)."""
    bg, noise = background(grey)
    tolerance = limits.tolerance + 3 * noise  # grey levels still counted as background
    im = Image.fromarray(grey)  # Pillow's histogram and lookup tables are C loops
    dark = garment_is_dark(np.array(im.histogram()), bg, tolerance)
    if grey.shape == (SIZE, SIZE) and not dark:
        return grey.copy()  # already in the dataset's convention
    levels = np.arange(256, dtype=np.float32)
    if dark:
        levels, bg = 255.0 - levels, 255.0 - bg
    # Background -> 0 and the garment stretched over the remaining range, as in the data.
    lut = _to_uint8(np.clip((levels - bg) * (255.0 / max(255.0 - bg, 1.0)), 0, 255))
    x = np.asarray(im.point(lut.tolist()))
    box = bounding_box(x > tolerance, limits.min_fraction)
    if box is None:
        raise ImageError(
            f"No garment found: every pixel is within {tolerance:.0f} grey levels of the "
            f"background ({bg:.0f}). Photograph the garment on a plain background of a "
            "different brightness.",
            "no_garment",
        )
    top, bottom, left, right = box
    crop = Image.fromarray(np.ascontiguousarray(x[top:bottom, left:right]))
    h, w = bottom - top, right - left
    scale = round(SIZE * fill) / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (width, height)
    small = crop.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)  # box-reduce first
    canvas = Image.new("L", (SIZE, SIZE), 0)
    # The dataset centres the bounding box and puts the odd spare pixel left/top.
    canvas.paste(small, ((SIZE - size[0] + 1) // 2, (SIZE - size[1] + 1) // 2))
    if scale < 1:  # downscaling blurs; the dataset was sharpened after its resize
        canvas = canvas.filter(ImageFilter.DETAIL)  # a mild 3x3 sharpen
    return np.asarray(canvas).copy()


def render_photo(image: np.ndarray, rng: np.random.Generator) -> bytes:
    """A dataset image (28, 28) made to look like a phone photo, as JPEG bytes.

    Upscaled to 200-400 px, inverted (a dark garment on a light table), placed off-centre
    with margins, tinted in colour and JPEG-compressed: for tests and figures.
    """
    side = int(rng.integers(200, 400))
    big = Image.fromarray(255 - image).resize((side, side), Image.Resampling.BICUBIC)
    w, h = side + int(rng.integers(40, 200)), side + int(rng.integers(40, 200))
    canvas = Image.new("L", (w, h), 255)
    canvas.paste(big, (int(rng.integers(0, w - side)), int(rng.integers(0, h - side))))
    tint = rng.uniform(0.85, 1.0, 3).astype(np.float32)  # per RGB channel
    rgb = _to_uint8(np.asarray(canvas, np.float32)[..., None] * tint)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=int(rng.integers(70, 95)))
    return buf.getvalue()


def to_png(image: np.ndarray) -> bytes:
    """Encode a (28, 28) uint8 image as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, "PNG")
    return buf.getvalue()
