"""The photo pipeline: pass-through of dataset images, formats, input types, bad inputs, fuzz."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from fmnist.errors import FmnistError
from fmnist.formats import decoders
from fmnist.images import (
    ImageError,
    Limits,
    background,
    render_photo,
    to_model_input,
    to_png,
)


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def garment(fashion) -> np.ndarray:
    """A test-set sneaker (28, 28), garment light on black."""
    (_, _), (x_test, y_test) = fashion
    return x_test[np.flatnonzero(y_test == 7)[0]]


@pytest.fixture(scope="module")
def photo(garment) -> Image.Image:
    """The sneaker as a product photo: dark on a white background, 140x140 RGB."""
    grey = Image.fromarray(255 - garment).resize((112, 112), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (140, 140), 255)
    canvas.paste(grey, (20, 10))
    return canvas.convert("RGB")


@pytest.fixture(scope="module")
def reference(photo) -> np.ndarray:
    return to_model_input(photo)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in grey levels of two model inputs (28, 28)."""
    assert a.shape == b.shape == (28, 28), (a.shape, b.shape)
    return float(np.abs(a.astype(int) - b).mean())


# ---------------------------------------------------------------- the pipeline


def test_dataset_images_pass_through_unchanged(fashion):
    (x, _), (x_test, _) = fashion
    for images in (x, x_test):
        changed = [i for i, im in enumerate(images) if not np.array_equal(to_model_input(im), im)]
        assert changed == []
    # ... also when they arrive as PNG files
    for im in x_test[:200]:
        assert np.array_equal(to_model_input(to_png(im)), im)


def test_photo_lands_near_the_original(garment, reference):
    assert reference.dtype == np.uint8
    assert diff(reference, garment) <= 12
    # centred by bounding box with the longest edge filling 28 pixels, as in the data
    rows, cols = np.flatnonzero(reference.max(1) > 24), np.flatnonzero(reference.max(0) > 24)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 27
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1 and abs((rows[0] + rows[-1]) / 2 - 13.5) <= 1


def test_light_garment_on_dark_background_is_not_inverted(garment, photo):
    dark_bg = Image.eval(photo, lambda v: 255 - v)  # light garment on black
    assert diff(to_model_input(dark_bg), to_model_input(photo)) <= 6


def test_noise_and_shadow_are_trimmed(photo, reference):
    a = np.asarray(photo.convert("L"), np.float32)
    rng = np.random.default_rng(0)
    a += rng.normal(0, 4, a.shape)  # sensor noise
    a[:, :12] -= np.linspace(18, 0, 12)  # a soft shadow along the left edge
    a[130, 130] = 0  # a speck of dust
    assert diff(to_model_input(np.clip(a, 0, 255).astype(np.uint8)), reference) <= 6


def test_background_ignores_a_garment_touching_half_the_border():
    a = np.zeros((28, 28), np.uint8)
    a[14:] = 200  # a bag filling the lower half, touching three sides
    assert background(a) == (0.0, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 80), st.integers(1, 80), st.integers(0, 255), st.integers(1, 255),
       st.integers(0, 2**32 - 1))  # fmt: skip
def test_background_is_the_median_and_mad_of_the_fullest_shade(h, w, low, spread, seed):
    """The histogram shortcut gives exactly np.median's level and noise."""
    grey = np.random.default_rng(seed).integers(low, min(256, low + spread + 1), (h, w), np.uint8)
    r = max(1, round(0.02 * min(h, w)))
    ring = np.concatenate([grey[:r].ravel(), grey[-r:].ravel(), grey[:, :r].ravel(),
                           grey[:, -r:].ravel()]).astype(np.float64)  # fmt: skip
    bins = (ring // 16).astype(np.int64)
    shade = ring[bins == np.bincount(bins, minlength=16).argmax()]
    level = np.median(shade)
    level_found, noise_found = background(grey)
    assert level_found == level
    assert noise_found == pytest.approx(1.4826 * np.median(np.abs(shade - level)), abs=1e-12)


def test_render_photo_is_a_light_jpeg(garment):
    data = render_photo(garment, np.random.default_rng(0))
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) >= 200
    assert np.median(np.asarray(im.convert("L"))) > 200  # mostly light table
    assert diff(to_model_input(data), garment) <= 14


# ---------------------------------------------------------------- formats and input types


def _formats(photo: Image.Image) -> dict[str, bytes]:
    rgba = photo.convert("RGBA")
    alpha = Image.fromarray(np.where(np.asarray(photo.convert("L")) < 250, 255, 0).astype("u1"))
    rgba.putalpha(alpha)
    junk = Image.new("RGBA", photo.size, (255, 0, 0, 0))  # colour hidden under alpha 0
    cutout = Image.composite(rgba, junk, alpha)
    grey16 = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    second = Image.new("RGB", photo.size, "black")  # a GIF's second frame must be ignored
    gif = io.BytesIO()
    photo.save(gif, "GIF", save_all=True, append_images=[second])
    return {
        "png-rgb": encode(photo, "PNG"),
        "png-grey": encode(photo.convert("L"), "PNG"),
        "png-palette": encode(photo.convert("P"), "PNG"),
        "png-palette-transparent": encode(photo.convert("P"), "PNG", transparency=255),
        "png-rgba-cutout": encode(cutout, "PNG"),
        "png-la": encode(cutout.convert("LA"), "PNG"),
        "png-16bit": encode(grey16, "PNG"),
        "jpeg": encode(photo, "JPEG", quality=90),
        "jpeg-grey": encode(photo.convert("L"), "JPEG", quality=90),
        "jpeg-cmyk": encode(photo.convert("CMYK"), "JPEG", quality=90),
        "webp": encode(photo, "WEBP", quality=90),
        "webp-rgba": encode(cutout, "WEBP", lossless=True),
        "gif-animated": gif.getvalue(),
        "bmp": encode(photo, "BMP"),
        "tiff": encode(photo, "TIFF"),
        "tiff-16bit": encode(grey16, "TIFF"),
        "tiff-cmyk": encode(photo.convert("CMYK"), "TIFF"),
        "eps": encode(photo, "EPS"),  # refused: decoding it would run Ghostscript
        "avif": encode(photo, "AVIF", quality=90),  # Pillow's own plugin
        "heic": encode(photo, "HEIF", quality=90),  # pillow-heif (the heic extra)
    }


FORMATS = ["png-rgb", "png-grey", "png-palette", "png-palette-transparent",
           "png-rgba-cutout", "png-la", "png-16bit", "jpeg", "jpeg-grey", "jpeg-cmyk", "webp",
           "webp-rgba", "gif-animated", "bmp", "tiff", "tiff-16bit", "tiff-cmyk", "avif",
           "heic"]  # fmt: skip


@pytest.fixture(scope="module")
def encoded(photo):
    assert {"AVIF", "HEIF"} <= set(decoders()), "the test extra installs pillow-heif"
    return _formats(photo)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_the_same_input(encoded, reference, fmt):
    assert diff(to_model_input(encoded[fmt]), reference) <= 6


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_large_16_bit_image_decodes_like_its_8_bit_version(photo, reference, fmt):
    """Over twice the working size an image is shrunk first: I;16 made Pillow's resize fail
    (a 500 for the server, a traceback for the CLI)."""
    big = photo.convert("L").resize((2400, round(2400 * photo.height / photo.width)))
    grey16 = Image.fromarray(np.asarray(big).astype(np.uint16) * 257)
    assert grey16.mode == "I;16"
    assert diff(to_model_input(encode(grey16, fmt)), to_model_input(encode(big, "PNG"))) <= 2


def test_one_bit_images_decode_like_their_grey_version(photo):
    bw = photo.convert("L").point(lambda v: 255 * (v > 128))  # 1 bit loses the grey levels
    assert np.array_equal(to_model_input(encode(bw.convert("1"), "PNG")), to_model_input(bw))


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])  # HEIF: pillow-heif's transforms
def test_exif_orientation_is_honoured(photo, reference, fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = photo.rotate(90, expand=True)  # PIL rotates counter-clockwise
    data = encode(stored, fmt, quality=95, exif=exif.tobytes())
    assert diff(to_model_input(data), reference) <= 6
    assert diff(to_model_input(encode(stored, fmt, quality=95)), reference) > 6


def test_every_input_type_gives_the_same_result(tmp_path, photo, reference):
    data = encode(photo, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    rgb = np.asarray(photo)
    inputs = {
        "str path": str(path),
        "Path": path,
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "file": io.BytesIO(data),
        "PIL": photo,
        "uint8 RGB": rgb,
        "uint8 RGBA": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "uint16 RGB": rgb.astype(np.uint16) * 257,
        "float RGB": rgb / 255.0,
    }
    for name, value in inputs.items():
        assert np.array_equal(to_model_input(value), reference), name
    with path.open("rb") as f:
        assert np.array_equal(to_model_input(f), reference)


# ---------------------------------------------------------------- bad inputs


def png_bomb(side: int = 20_000) -> bytes:
    """A real 1-bit PNG of side x side black pixels: ~50 kB that decode to side**2 pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\0" * (1 + side // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grey
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (8_000, "is 8000x8000 = 64,000,000 pixels, more than the limit of 50,000,000 pixels"),
        (20_000, "declares 400,000,000 pixels, more than the limit of 50,000,000"),  # Pillow's
    ],
)
def test_decompression_bomb_is_refused_before_decoding(side, message):
    data = png_bomb(side)
    assert len(data) < 200_000
    with pytest.raises(ImageError, match=message) as e:
        to_model_input(data)
    assert e.value.code == "too_many_pixels"


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda d: b"", "empty", "is empty (0 bytes)"),
        (lambda d: b"hello, world", "not_an_image", "is not an image in a supported format"),
        (
            lambda d: d["eps"],
            "not_an_image",
            "(PNG, JPEG, WebP, GIF, BMP, TIFF, AVIF or HEIC/HEIF;",
        ),  # no Ghostscript
        (lambda d: d["jpeg"][: len(d["jpeg"]) // 2], "truncated", "truncated or corrupt"),
        (lambda d: d["png-rgb"][: len(d["png-rgb"]) // 2], "truncated", "truncated or corrupt"),
        (lambda d: d["png-rgb"][:40], "truncated", "header is truncated or corrupt"),
        (lambda d: np.zeros((0, 5), np.uint8), "zero_size", "has no pixels"),
        (lambda d: Image.new("L", (0, 0)), "zero_size", "has no pixels"),
        (lambda d: np.zeros((4, 4, 2), np.uint8), "bad_array", "must be (H, W) grey"),
        (lambda d: np.zeros((4, 4), np.int64), "bad_array", "must be uint8, uint16 or float"),
        (lambda d: np.full((4, 4), 2.0), "bad_array", "finite values in [0, 1]"),
        (lambda d: np.full((4, 4), np.nan), "bad_array", "found 16 values that are not finite"),
        (lambda d: 42, "bad_input", "Cannot read an image from a int"),
        (lambda d: np.full((40, 40), 255, np.uint8), "no_garment", "No garment found"),
    ],
)
def test_bad_inputs_raise_one_clear_error(encoded, make, code, message):
    with pytest.raises(ImageError, match=re.escape(message)) as e:
        to_model_input(make(encoded))
    assert e.value.code == code
    assert isinstance(e.value, FmnistError)  # the CLI prints it as one line


def test_bad_paths_raise_image_errors(tmp_path, encoded):
    with pytest.raises(ImageError, match="Cannot read .*missing.png") as e:
        to_model_input(tmp_path / "missing.png")
    assert e.value.code == "unreadable_path"
    with pytest.raises(ImageError, match="is a directory") as e:
        to_model_input(tmp_path)
    assert e.value.code == "unreadable_path"
    (tmp_path / "big.png").write_bytes(encoded["bmp"])
    with pytest.raises(ImageError, match=r"more than the limit of 1,000 bytes") as e:
        to_model_input(tmp_path / "big.png", Limits(max_bytes=1000))
    assert e.value.code == "too_large"
    # A device has no size to check first (/dev/zero filled the memory): read to the limit.
    # /proc/self/status has a size of 0 too, and over 1,000 bytes: a test that ends either way.
    with pytest.raises(ImageError, match=r"status has more bytes than the limit of 1,000"):
        to_model_input(Path("/proc/self/status"), Limits(max_bytes=1000))
    with pytest.raises(ImageError, match="text mode"):
        to_model_input(io.StringIO("text"))


def test_limits_are_configurable(encoded):
    with pytest.raises(ImageError, match="more than the limit of 1,000 bytes"):
        to_model_input(encoded["bmp"], Limits(max_bytes=1000))
    with pytest.raises(ImageError, match="140x140 = 19,600 pixels, more than the limit of 10,000"):
        to_model_input(encoded["png-rgb"], Limits(max_pixels=10_000))


# ---------------------------------------------------------------- fuzz

FUZZ_LIMITS = Limits(max_pixels=1_000_000)  # keeps crafted headers from allocating much


def outcome(data) -> str:
    """'ok' for a valid model input, else the ImageError's code; anything else propagates."""
    try:
        out = to_model_input(data, FUZZ_LIMITS)
    except ImageError as e:
        assert str(e) and e.code
        return e.code
    assert out.shape == (28, 28) and out.dtype == np.uint8
    return "ok"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(data):
    outcome(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt TIFF tags
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=arrays(
        np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]))
    ),
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    truncate=st.floats(0.0, 1.0),
)
def test_fuzz_random_images_and_corrupted_files(image, fmt, cuts, truncate):
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[image.shape[2]]
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"
    pil = Image.fromarray(image[..., 0] if mode == "L" else image[..., : len(mode)], mode)
    outcome(np.squeeze(image, 2) if image.shape[2] == 1 else image)
    outcome(pil)
    data = bytearray(encode(pil, fmt))
    assert outcome(bytes(data)) in ("ok", "no_garment")  # a valid file always decodes
    for pos, value in cuts:  # corrupt a few bytes, then maybe cut the file short
        data[pos % len(data)] = value
    outcome(bytes(data[: max(1, int(len(data) * truncate))]))
