"""How answers are decided from a model's logits, beyond the top class: the unsure
thresholds and the photo offsets a model file may carry, checked, and the averaging of a
picture's prediction over one-pixel shifts. NumPy only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError, ModelFileError

# A prediction whose top probability is below this is marked unsure, unless the model
# file records its own thresholds (model.json "min_confidence": one, or one per class,
# fitted by tools/bundle.py on the validation split and the development photos).
DEFAULT_MIN_CONFIDENCE = 0.5
# A picture the pipeline changed (cut out, inverted or resized) is also predicted moved by
# one pixel each way, and the five predictions averaged: where its edges fall is the
# pipeline's least certain step (README: "Shift averaging"). Images already in the dataset's
# convention, and uint8 (N, 28, 28) batches (the fast path), are predicted as they are.
PHOTO_SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (N, C) in float64."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def moved(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Inputs (N, H, W) moved down ``dy`` and right ``dx`` pixels, -1, 0 or 1 each.

    The gap is filled black (0), the background, as training's 1-pixel shifts fill it.
    """
    if not all(type(d) is int and -1 <= d <= 1 for d in (dy, dx)) or x.ndim != 3:
        raise ValueError(
            f"moved takes inputs (N, H, W) and shifts of -1, 0 or 1 pixel (int) per axis, "
            f"got shape {x.shape} and ({dy!r}, {dx!r})."
        )
    h, w = x.shape[1:]
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    return np.ascontiguousarray(pad[:, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w])


def shift_averaged(
    logits_of: Callable[[np.ndarray], np.ndarray], x: np.ndarray, logits: np.ndarray
) -> np.ndarray:
    """The log of the mean probabilities of inputs ``x`` (their ``logits`` given) and of
    their copies moved by each of PHOTO_SHIFTS, which ``logits_of`` runs the model on."""
    copies = np.concatenate([moved(x, dy, dx) for dy, dx in PHOTO_SHIFTS])
    more = softmax(logits_of(copies)).reshape(len(PHOTO_SHIFTS), *logits.shape)
    mean = (softmax(logits) + more.sum(0)) / (1 + len(PHOTO_SHIFTS))
    return np.log(np.maximum(mean, np.finfo(np.float64).tiny))


def row_flags(n: int, **flags: Any) -> list[np.ndarray]:
    """Each of ``flags`` as (n,) bool, None as all False; one bool per row, checked."""
    out = [np.zeros(n, bool) if f is None else np.asarray(f, bool) for f in flags.values()]
    for name, f in zip(flags, out, strict=True):
        if f.shape != (n,):
            raise ValueError(
                f"{name} must be one bool per input ({n}), got shape {f.shape}; pass None, "
                f"or for images the flag fmnist.images.picture_input gives each."
            )
    return out


def class_thresholds(value: float | Sequence[float], classes: Sequence[str]) -> np.ndarray:
    """The unsure threshold of each class (C,) from one threshold or one per class, checked."""
    raw = np.asarray(value) if not isinstance(value, str) else np.asarray(None)
    try:  # numbers only: True (every answer unsure) or "0.5" that NumPy would read as one
        t = raw.astype(np.float64) if raw.dtype.kind in "fiu" else np.full((1, 1), np.nan)
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
        raw = np.asarray(0.0 if value is None else value)
    except (TypeError, ValueError):  # ragged lists
        raw = np.asarray("not numbers")
    # Numbers only: a string or a bool that NumPy would read as one is refused too.
    b = raw.astype(np.float64) if raw.dtype.kind in "fiu" else np.full(1, np.nan)
    if b.shape not in ((), (len(classes),)) or not np.isfinite(b).all():
        raise ConfigError(
            f"photo_offsets must be finite numbers, one per class ({len(classes)}: "
            f"{', '.join(classes)}), or one for all, got {value!r}; e.g. 0 for none."
        )
    return np.broadcast_to(b, (len(classes),)).copy()


def shifts_setting(value: Any, classes: Sequence[str] = ()) -> bool:
    """Whether pictures are averaged over PHOTO_SHIFTS: True or False, checked."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(
            f"photo_shifts must be true or false (a JSON boolean, unquoted), got {value!r} "
            f"({type(value).__name__}); true averages each picture over one-pixel shifts (the "
            "default), false predicts it once."
        )
    return bool(value)


# model.json keys a Classifier reads beyond the weights: (check, default, the way round).
RULES = {
    "min_confidence": (
        class_thresholds,
        DEFAULT_MIN_CONFIDENCE,
        "`--min-confidence P`, min_confidence=P",
    ),
    "photo_offsets": (class_offsets, None, "`--no-photo-offsets`, photo_offsets=0"),
    "photo_shifts": (shifts_setting, True, "`--no-photo-shifts`, photo_shifts=False"),
}


def model_rule(backend: Any, key: str, given: Any, classes: Sequence[str]) -> Any:
    """A model's checked setting ``key`` (one of RULES): ``given``, else its model file's.

    The model file's is ``backend.meta`` (read from ``backend.path``), else RULES' default.
    """
    check, default, way_out = RULES[key]
    if given is not None:
        return check(given, classes)
    try:
        return check(backend.meta.get(key, default), classes)
    except ConfigError as e:
        raise ModelFileError(
            f"{backend.path}: its {key!r} value is unusable ({e}) Fix or remove it in the "
            "run's model.json and export or bundle the model again (`fmnist export RUN_DIR`, "
            "`python tools/bundle.py --name NAME --rescore`), "
            f"or predict with your own ({way_out})."
        ) from None
