"""How answers are decided from a model's logits, beyond the top class: the unsure
thresholds and the photo offsets a model file may carry, checked. NumPy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError


def class_thresholds(value: float | Sequence[float], classes: Sequence[str]) -> np.ndarray:
    """The unsure threshold of each class (C,) from one threshold or one per class, checked."""
    try:
        t = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        t = np.full((1, 1), np.nan)  # not numbers: refused below with what was given
    if t.ndim > 1 or (t.ndim == 1 and len(t) != len(classes)):
        raise ConfigError(
            f"min_confidence must be one probability or one per class ({len(classes)}: "
            f"{', '.join(classes)}), got {value!r}; e.g. 0.5."
        )
    if not (np.all(t >= 0) and np.all(t <= 1)):  # also refuses NaN
        raise ConfigError(
            f"min_confidence must be a probability in [0, 1], got {value}; "
            "e.g. 0.5 marks answers below 50 % as unsure, 0 never does."
        )
    return np.broadcast_to(t, (len(classes),)).copy()


def class_offsets(value: float | Sequence[float] | None, classes: Sequence[str]) -> np.ndarray:
    """The photo offset of each class (C,) from one number or one per class, checked; None: 0."""
    try:
        b = np.asarray(0.0 if value is None else value, dtype=np.float64)
    except (TypeError, ValueError):
        b = np.full(1, np.nan)  # not numbers: refused below with what was given
    if b.shape not in ((), (len(classes),)) or not np.isfinite(b).all():
        raise ConfigError(
            f"photo_offsets must be finite numbers, one per class ({len(classes)}: "
            f"{', '.join(classes)}), got {value!r}; refit them with `python tools/bundle.py "
            "--name NAME --rescore`, or load the model with photo_offsets=0 (none)."
        )
    return np.broadcast_to(b, (len(classes),)).copy()
