"""The image formats fmnist decodes, and what it says about files it cannot.

Pillow's plugins for PNG, JPEG, WebP, GIF, BMP and TIFF always; AVIF where Pillow was built
with it (its recent wheels); HEIC/HEIF, the format iPhones save photos in, when the optional
pillow-heif is installed (``pip install 'fmnist[heic]'``). Never any other plugin: Pillow's
EPS plugin, for one, would run Ghostscript on an upload.
"""

from __future__ import annotations

import functools

from .errors import ImageError

CORE = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO (multi-picture)
# The first bytes of PNG, JPEG, GIF, BMP and TIFF files (WebP: "WEBP" at offset 8).
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
# HEIF and AVIF files are ISO media files: an "ftyp" box at offset 4 lists brands that say
# what they hold (ISO/IEC 23008-12 for HEIF, the AV1 image file format for AVIF).
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
NAMES = {"WEBP": "WebP", "HEIF": "HEIC/HEIF"}  # as people write them in messages


@functools.cache
def decoders() -> tuple[str, ...]:
    """The Pillow formats fmnist opens here: CORE, then AVIF and HEIF where available."""
    from PIL import features

    found = list(CORE)
    if features.check("avif"):
        found.append("AVIF")
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        pass
    else:
        register_heif_opener()  # Pillow's "HEIF" format: .heic and .heif files
        found.append("HEIF")
    return tuple(found)


def listed() -> str:
    """The formats decoded here, for messages: 'PNG, JPEG, WebP, GIF, BMP or TIFF'."""
    names = [NAMES.get(f, f) for f in decoders()]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def brands(data: bytes) -> frozenset[bytes]:
    """The brands of an ISO media file's "ftyp" box (major and compatible); none otherwise."""
    if data[4:8] != b"ftyp":
        return frozenset()
    size = min(int.from_bytes(data[:4], "big"), len(data), 4096)
    return frozenset({data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)})


def unidentified(data: bytes, name: str) -> ImageError:
    """The error for bytes that no decoder here opens: what they look like and the way out."""
    kinds = brands(data)
    # AVIF files list HEIF's structural brands (mif1) too: AVIF is asked first.
    kind = "AVIF" if kinds & AVIF_BRANDS else "HEIF" if kinds & HEIF_BRANDS else None
    if kind == "HEIF" and kind not in decoders():
        return ImageError(
            f"{name} is a HEIC/HEIF photo (the format iPhones save), which needs the optional "
            "pillow-heif: `pip install 'fmnist[heic]'`, or convert it to JPEG.",
            "not_an_image",
        )
    if kind == "AVIF" and kind not in decoders():
        return ImageError(
            f"{name} is an AVIF image, which this Pillow was built without: upgrade it "
            "(`pip install -U pillow`; its recent wheels decode AVIF) or convert it to JPEG.",
            "not_an_image",
        )
    if data.startswith(SIGNATURES) or data[8:12] == b"WEBP" or kind:
        return ImageError(
            f"{name} starts like an image ({data[:12]!r}) but its header is truncated or "
            "corrupt; the file is incomplete: copy or upload it again.",
            "truncated",
        )
    return ImageError(
        f"{name} is not an image in a supported format ({listed()}; it has {len(data):,d} "
        f"bytes starting {data[:8]!r}); convert it to one.",
        "not_an_image",
    )
