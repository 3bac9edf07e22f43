"""Phone formats without their decoders: one clear error that names the format and the way
to get it read; truncated HEIC and AVIF files are told apart from unknown bytes."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from fmnist import formats
from fmnist.imagefiles import image_extensions, image_files
from fmnist.images import ImageError, Limits, to_model_input
from fmnist.serve.soak import heif_bomb

DECODERS = formats.decoders()  # registers pillow-heif's opener and encoder, used below


def encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, fmt, quality=80)
    return buf.getvalue()


@pytest.fixture
def core_only(monkeypatch):
    """An installation with neither pillow-heif nor Pillow's AVIF plugin."""
    monkeypatch.setattr(formats, "_available", lambda: formats.CORE)


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
    assert [Path(p).name for p in found] == ["IMG_0001.HEIC", "b.avif", "c.jpg"]


def test_without_pillow_heif_a_folders_heic_files_get_the_way_out(core_only, tmp_path):
    (tmp_path / "IMG_0001.HEIC").write_bytes(encoded("HEIF"))
    ((path, error),) = image_files([str(tmp_path)])  # collected, not skipped without a word
    assert error is None and Path(path).name == "IMG_0001.HEIC"
    with pytest.raises(ImageError, match=re.escape("`pip install 'fmnist[heic]'`")):
        to_model_input(Path(path))


def test_heif_false_refuses_heic_and_avif_before_any_decoder_sees_them(monkeypatch):
    bomb, heic = heif_bomb(), encoded("HEIF")
    assert len(bomb) < 5_000 and Image.open(io.BytesIO(bomb)).size == (100, 100)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    for data, what in ((heic, "a HEIC/HEIF photo"), (bomb, "an AVIF image")):
        with pytest.raises(ImageError, match=f"is {what}, which is not decoded here") as e:
            to_model_input(data, Limits(heif=False))  # as fmnist serve runs by default
        assert e.value.code == "not_an_image"
        assert "(fmnist serve takes PNG, JPEG, WebP, GIF, BMP or TIFF unless" in str(e.value)
