"""Phone photo formats through the pipeline: JPEG, HEIC and AVIF, at the photo's size and at
a 12 MP phone camera's, time per photo and how far each model input lies from the JPEG's.

    python benchmarks/photo_formats.py [PHOTO_DIR] [--photos 20] [--repeats 3]

Each photo (default: ../shared/photos-dev, every kind) is encoded by Pillow (JPEG quality
90, AVIF quality 70) and pillow-heif (HEIC quality 80: the `heic` extra), then read back by
fmnist.images.picture_input (decode, EXIF, segmentation, 28x28) as `fmnist predict` runs
it (OpenCV's and libheif's own threads), the best of --repeats calls per file; the table
gives the median over the photos. A JPEG is decoded at
a reduced scale (libjpeg's DCT scaling); HEIC and AVIF decode every pixel.
"""

from __future__ import annotations

import argparse
import io
from functools import partial
from pathlib import Path

import numpy as np
from benchlib import time_per_call
from PIL import Image

from fmnist import formats
from fmnist.images import picture_input
from fmnist.system import hardware

ENCODINGS = {"JPEG": {"quality": 90}, "HEIF": {"quality": 80}, "AVIF": {"quality": 70}}
PHONE = (4032, 3024)  # a 12 MP phone photo, landscape; portrait photos are turned to fit


def encoded(im: Image.Image, fmt: str) -> bytes:
    """``im`` in ``fmt`` with the settings of ENCODINGS."""
    buf = io.BytesIO()
    im.save(buf, fmt, **ENCODINGS[fmt])
    return buf.getvalue()


def main() -> None:
    """Print one row per size and format: median ms per photo, median input difference."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo_dir", nargs="?", default="../shared/photos-dev", type=Path)
    ap.add_argument("--photos", type=int, default=20, help="photos used, spread over the kinds")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    missing = {"HEIF", "AVIF"} - set(formats.decoders())
    if missing:
        raise SystemExit(
            f"no decoder here for {sorted(missing)}: HEIF needs pillow-heif (pip install "
            "'fmnist[heic]'), AVIF a Pillow of 11.3 or later (pip install -U pillow)"
        )
    files = sorted(p for p in args.photo_dir.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    files = files[:: max(1, len(files) // args.photos)][: args.photos]
    print(f"hardware: {hardware()}; {len(files)} photos from {args.photo_dir}")
    print("size      format  kB (median)  ms per photo (median)  input vs JPEG (mean |diff|)")
    for size in ("as taken", "12 MP"):
        rows: dict[str, list[tuple[float, float, float]]] = {f: [] for f in ENCODINGS}
        for f in files:
            im = Image.open(f).convert("RGB")
            if size == "12 MP":
                w, h = PHONE if im.width >= im.height else PHONE[::-1]
                im = im.resize((w, h), Image.Resampling.BICUBIC)
            ref = None
            for fmt in ENCODINGS:
                data = encoded(im, fmt)
                x = picture_input(data)[0]
                t = min(time_per_call(partial(picture_input, data), args.repeats, warmup=0))
                ref = x if ref is None else ref
                diff = float(np.abs(x.astype(int) - ref).mean())
                rows[fmt].append((len(data) / 1e3, t * 1e3, diff))
        for fmt, r in rows.items():
            kb, ms, diff = np.median(np.array(r), axis=0)
            print(f"{size:9s} {fmt:6s} {kb:12.0f} {ms:22.1f} {diff:28.2f}")


if __name__ == "__main__":
    main()
