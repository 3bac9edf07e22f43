"""Synthetic photos the integration tests share."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def carpet_photo() -> bytes:
    """A JPEG of a dark shirt shape on a noisy carpet: a photo the pipeline segments."""
    rng = np.random.default_rng(0)
    ground = np.clip(110 + rng.normal(0, 25, (400, 300)), 0, 255)
    rgb = np.stack([ground * 0.9, ground * 0.95, ground * 1.1], -1).astype(np.uint8)
    rgb[80:330, 70:230] = (200, 30, 40)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()
