"""Models that ship inside the package, so that predicting needs no training first.

Each bundled model is a folder ``fmnist/models_bundled/<name>/`` holding what a run
directory holds for a model: ``model.safetensors`` + ``model.json`` (PyTorch), the
``model.onnx`` export (for the serving path without torch) and a model card,
``README.md``. ``model.json``'s ``bundle`` key records how the model was made (the
command, commit and hardware) and what it scored on real photos. `make bundled` remakes
them from scratch (tools/bundle.py). No torch here.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from .errors import ModelFileError
from .rundir import META, ONNX, read_json

PREFERENCE = ("photo", "default")  # what a bare `fmnist predict FILE` uses, first found


def root() -> Path:
    """The folder of the bundled models inside the installed package."""
    return Path(str(files("fmnist").joinpath("models_bundled")))


def names() -> list[str]:
    """The bundled models, most preferred first."""
    found = (
        sorted(d.name for d in root().iterdir() if (d / META).is_file()) if root().is_dir() else []
    )
    return sorted(found, key=lambda n: (PREFERENCE.index(n) if n in PREFERENCE else 99, n))


def path(name: str | None = None) -> Path:
    """The folder of bundled model ``name`` (None: the preferred one)."""
    available = names()
    if not available:
        raise ModelFileError(
            "This installation of fmnist has no bundled models (the package data "
            f"{root()} is missing). Reinstall fmnist, or give a run directory or model file."
        )
    if name is None:
        return root() / available[0]
    if name not in available:
        raise ModelFileError(
            f"No bundled model {name!r}: the bundled models are {', '.join(available)}. "
            "Give one of them, a run directory or a model file."
        )
    return root() / name


def describe(name: str) -> dict[str, Any]:
    """What `fmnist models` shows of a bundled model: accuracy, photo accuracy, provenance."""
    folder = path(name)
    meta = read_json(folder / META)
    bundle = meta.get("bundle", {})
    return {
        "name": name,
        "model": meta["model"],
        "test_accuracy": meta.get("metrics", {}).get("test_accuracy"),
        "photo_accuracy": bundle.get("photo_accuracy", {}),
        "min_confidence": meta.get("min_confidence"),
        "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
        "onnx": (folder / ONNX).is_file(),
        "provenance": bundle.get("provenance", {}),
    }


def resolve(model: str | os.PathLike | None) -> Path:
    """``model`` as a Path; None or a bundled model's name (not a file here): its folder."""
    if model is None:
        return path()
    p = Path(model)
    if not p.exists() and len(p.parts) == 1 and not p.suffix:  # a name, not a path
        return path(str(model))
    return p
