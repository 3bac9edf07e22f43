"""Phone formats without their decoders: one clear error that names the format and the way
to get it read; truncated HEIC and AVIF files are told apart from unknown bytes."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from fmnist import formats
from fmnist.imagefiles import image_extensions, image_files
from fmnist.images import ImageError, to_model_input

DECODERS = formats.decoders()  # registers pillow-heif's opener and encoder, used below


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(buf, fmt, quality=80)
    return buf.getvalue()


@pytest.fixture
def core_only(monkeypatch):
    """An installation with neither pillow-heif nor Pillow's AVIF plugin."""
    monkeypatch.setattr(formats, "decoders", lambda: formats.CORE)


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("HEIF", "is a HEIC/HEIF photo (the format iPhones save), which needs the optional "
                 "pillow-heif: `pip install 'fmnist[heic]'`"),
        ("AVIF", "is an AVIF image, which this Pillow was built without: upgrade it"),
    ],
)  # fmt: skip
def test_a_format_without_its_decoder_says_how_to_get_it(core_only, fmt, message):
    with pytest.raises(ImageError, match=re.escape(message)) as e:
        to_model_input(encoded(fmt))
    assert e.value.code == "not_an_image"
    assert "(PNG, JPEG, WebP, GIF, BMP or TIFF;" in str(formats.unidentified(b"x" * 20, "it"))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_truncated_header_is_called_truncated(fmt):
    data = encoded(fmt)
    with pytest.raises(ImageError, match="header is truncated or corrupt") as e:
        to_model_input(data[:40])
    assert e.value.code == "truncated"
    assert formats.brands(data) & (formats.HEIF_BRANDS | formats.AVIF_BRANDS)


def test_other_iso_media_files_are_not_images():
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42" + bytes(64)
    assert formats.brands(mp4) == {b"mp42", b"isom"}
    with pytest.raises(ImageError, match="is not an image in a supported format") as e:
        to_model_input(mp4)
    assert e.value.code == "not_an_image"


def test_folders_give_heic_and_avif_files(tmp_path):
    assert {"AVIF", "HEIF"} <= set(DECODERS), "the test extra installs pillow-heif"
    assert {".heic", ".heif", ".avif"} <= image_extensions()
    for name, fmt in (("IMG_0001.HEIC", "HEIF"), ("b.avif", "AVIF"), ("c.jpg", "JPEG")):
        (tmp_path / name).write_bytes(encoded(fmt))
    (tmp_path / "notes.txt").write_text("not an image")
    found = [path for path, error in image_files([str(tmp_path)]) if error is None]
    assert [p.rsplit("/", 1)[1] for p in found] == ["IMG_0001.HEIC", "b.avif", "c.jpg"]
