"""fmnist: Fashion-MNIST classification with convolutional networks.

The public API is small and imported lazily, so that `import fmnist` stays cheap and the
serving path works without torch::

    from fmnist import CLASSES, load_data, create_model, TrainConfig, train
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .data import CLASSES, DataError, load_data

__version__ = "0.1.0"

_LAZY = {
    "create_model": "models",
    "MODELS": "models",
    "TrainConfig": "train",
    "PRESETS": "train",
    "get_preset": "train",
    "train": "train",
    "load_model": "checkpoint",
}

__all__ = ["CLASSES", "DataError", "__version__", "load_data", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import torch-dependent parts on first use."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fmnist' has no attribute {name!r}")
