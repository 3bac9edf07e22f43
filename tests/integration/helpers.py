"""What the integration tests share: a synthetic photo, a run with its model.json changed."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

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


def exported_copy(run: Path, dest: Path, **keys: object) -> tuple[Path, dict]:
    """A copy of ``run`` at ``dest`` with ``keys`` set in its model.json and exported to
    model.onnx (which carries them); and the model.json as it was."""
    shutil.copytree(run, dest)
    meta = json.loads((dest / "model.json").read_text())
    (dest / "model.json").write_text(json.dumps({**meta, **keys}))
    from fmnist.export import export

    export(dest, dest / "model.onnx")
    return dest, meta
