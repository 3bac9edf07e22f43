"""fmnist: Fashion-MNIST classification with convolutional networks.

The public API is small and imported lazily, so that `import fmnist` stays cheap and the
serving path works without torch::

    from fmnist import load_data, create_model, train, TrainConfig, get_preset, Classifier, evaluate

Where to start reading: DESIGN.md at the repository's root.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .data import CLASSES, load_data
from .errors import DataError, FmnistError

__version__ = "0.1.0"

_LAZY = {  # name -> the module that defines it, imported on first use
    "create_model": "models",
    "MODELS": "models",
    "TrainConfig": "config",
    "PRESETS": "config",
    "get_preset": "config",
    "train": "training",
    "evaluate": "evaluation",
    "Classifier": "predict",
    "load_model": "checkpoint",
    "FashionMNIST": "dataset",
}

__all__ = ["CLASSES", "DataError", "FmnistError", "__version__", "load_data", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import torch-dependent parts on first use."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fmnist' has no attribute {name!r}")
