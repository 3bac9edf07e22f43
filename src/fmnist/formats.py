"""The image formats fmnist decodes, and what it says about files it cannot.

Pillow's plugins for PNG, JPEG, WebP, GIF, BMP and TIFF always; AVIF where Pillow was built
with it (its wheels since 11.3); HEIC/HEIF, the format iPhones save photos in, when the
optional pillow-heif is installed (``pip install 'fmnist[heic]'``). Never any other plugin:
Pillow's EPS plugin, for one, would run Ghostscript on an upload.

HEIC and AVIF ("heif" below: both are HEIF files) can be left out (``heif=False``, as
``fmnist serve`` does unless told): their decoders allocate what the coded image needs, not
the size in the file's header that the pixel limit is checked against, so a crafted file of
a few kB can make them use gigabytes.
"""

from __future__ import annotations

import functools

from .errors import ImageError

CORE = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO (multi-picture)
# The first bytes of PNG, JPEG, GIF, BMP and TIFF files (WebP: "WEBP" at offset 8).
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
# HEIF and AVIF files are ISO media files: an "ftyp" box at offset 4 lists brands that say
# what they hold (ISO/IEC 23008-12 for HEIF, the AV1 image file format for AVIF).
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
AVIF_BRANDS = frozenset({b"avif", b"avis"})
NAMES = {"WEBP": "WebP", "HEIF": "HEIC/HEIF"}  # as people write them in messages
# Suffixes a folder scan always collects, so that a HEIC or AVIF file without its decoder
# here gets the error that says how to read it instead of being skipped without a word.
PHOTO_SUFFIXES = frozenset({".heic", ".heif", ".hif", ".avif"})


def decoders(heif: bool = True) -> tuple[str, ...]:
    """The Pillow formats opened here: CORE, then AVIF and HEIF where available (``heif``)."""
    return _available() if heif else CORE


@functools.cache
def _available() -> tuple[str, ...]:
    """CORE and the optional decoders installed; the first call registers pillow-heif's
    plugin with Pillow for the whole process."""
    from PIL import features

    found = list(CORE)
    if "avif" in features.modules and features.check_module("avif"):
        found.append("AVIF")
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        pass
    else:
        register_heif_opener()  # Pillow's "HEIF" format: .heic and .heif files
        found.append("HEIF")
    return tuple(found)


def listed(heif: bool = True) -> str:
    """The formats decoded here, for messages: 'PNG, JPEG, WebP, GIF, BMP or TIFF'."""
    names = [NAMES.get(f, f) for f in decoders(heif)]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def brands(data: bytes) -> frozenset[bytes]:
    """The brands of an ISO media file's "ftyp" box (major and compatible); none otherwise."""
    if data[4:8] != b"ftyp":
        return frozenset()
    size = min(int.from_bytes(data[:4], "big"), len(data), 4096)
    return frozenset({data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)})


def unidentified(data: bytes, name: str, heif: bool = True) -> ImageError:
    """The error for bytes that no decoder here opens: what they look like and the way out."""
    kinds = brands(data)
    # AVIF files list HEIF's structural brands (mif1) too: AVIF is asked first.
    kind = "AVIF" if kinds & AVIF_BRANDS else "HEIF" if kinds & HEIF_BRANDS else None
    if kind and not heif:
        what = "a HEIC/HEIF photo" if kind == "HEIF" else "an AVIF image"
        return ImageError(
            f"{name} is {what}, which is not decoded here: its decoder trusts the image size "
            "in the file's header, which a crafted file can fake to take gigabytes of memory "
            f"(fmnist serve takes {listed(heif=False)} unless started with --heif). Convert "
            "it to JPEG.",
            "not_an_image",
        )
    if kind == "HEIF" and kind not in decoders():
        return ImageError(
            f"{name} is a HEIC/HEIF photo (the format iPhones save), which needs the optional "
            "pillow-heif: `pip install 'fmnist[heic]'`, or convert it to JPEG.",
            "not_an_image",
        )
    if kind == "AVIF" and kind not in decoders():
        return ImageError(
            f"{name} is an AVIF image, which this Pillow was built without: upgrade it "
            "(`pip install -U pillow`; its wheels decode AVIF since 11.3) or convert it to JPEG.",
            "not_an_image",
        )
    if data.startswith(SIGNATURES) or data[8:12] == b"WEBP" or kind:
        return ImageError(
            f"{name} starts like an image ({data[:12]!r}) but its header is truncated or "
            "corrupt; the file is incomplete: copy or upload it again.",
            "truncated",
        )
    return ImageError(
        f"{name} is not an image in a supported format ({listed(heif)}; it has {len(data):,d} "
        f"bytes starting {data[:8]!r}); convert it to one.",
        "not_an_image",
    )
