"""Classifier: load a trained model (checkpoint or ONNX file) and predict any images.

    clf = Classifier.load("runs/latest")           # or "model.onnx": no torch needed
    result = clf.predict(["shirt.jpg", "shoe.png"])
    result.label, result.probabilities              # ['Shirt', 'Sneaker'], (2, 10)

Images go through :func:`fmnist.images.picture_input`, which also says whether a photo was
cut out of a cluttered ground (its logits then get the model's photo offsets) and whether
the pipeline changed it (its prediction is then averaged over one-pixel shifts); a uint8
batch (N, 28, 28) is taken as model input as is (the dataset's convention, the fast path).
torch is imported only by the torch backend, so the ONNX backend runs without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import bundled
from .backends import (
    OnnxBackend,
    TorchBackend,
    float_pixels,
    model_precision,
    onnx_backend,
    onnx_session,
    run_onnx,
)
from .decision import (
    DEFAULT_MIN_CONFIDENCE,
    class_offsets,
    class_thresholds,
    model_rule,
    row_flags,
    shift_averaged,
    softmax,
)
from .errors import ImageError, ModelFileError
from .images import DEFAULT_LIMITS, SIZE, ImageInput, Limits, picture_input

__all__ = [
    "Classifier",
    "ModelFileError",
    "Prediction",
    "class_offsets",
    "class_thresholds",
    "float_pixels",
    "image_extensions",
    "image_files",
    "model_precision",
    "onnx_session",
    "predict_files",
    "run_onnx",
    "softmax",
]

ONNX_FILE = "model.onnx"  # the name `fmnist export` gives the file inside a run directory


@dataclass
class Prediction:
    """Predictions for N images: probabilities, labels and the 28x28 inputs the model saw."""

    probabilities: np.ndarray  # (N, C) float64 softmax of the logits
    classes: tuple[str, ...]  # C class names
    images: np.ndarray  # (N, 28, 28) uint8, garment light on black
    # Below this top probability an answer is unsure: one threshold, or (C,) one per class.
    min_confidence: float | np.ndarray = DEFAULT_MIN_CONFIDENCE
    # (N,) bool: cut out of a cluttered background, so the model's photo offsets applied.
    photo: np.ndarray | None = None

    @property
    def class_index(self) -> np.ndarray:
        """Predicted class indices (N,) int64."""
        return self.probabilities.argmax(1)

    @property
    def label(self) -> list[str]:
        """Predicted class names (N,)."""
        return [self.classes[i] for i in self.class_index]

    @property
    def probability(self) -> np.ndarray:
        """Probability of the predicted class (N,)."""
        return self.probabilities.max(1)

    @property
    def unsure(self) -> np.ndarray:
        """True (N,) where the model is not sure enough to answer: top probability too low.

        Probabilities that are not numbers (a model whose weights went NaN) are unsure too.
        """
        t = np.asarray(self.min_confidence, dtype=np.float64)
        return ~(self.probability >= (t[self.class_index] if t.ndim else t))

    def top_k(self, k: int = 3) -> list[list[dict[str, Any]]]:
        """Per image, the k most probable classes as [{label, probability}], best first."""
        if not 1 <= k <= len(self.classes):
            raise ValueError(f"k must be in [1, {len(self.classes)}], one per class; got {k}.")
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [{"label": self.classes[j], "probability": float(p[j])} for j in row]
            for p, row in zip(self.probabilities, order, strict=True)
        ]

    def records(self, top_k: int = 3) -> list[dict[str, Any]]:
        """Per image, the JSON-ready record: label, class_index, probability, unsure, top_k."""
        labels, index, prob, unsure = self.label, self.class_index, self.probability, self.unsure
        return [
            {
                "label": labels[i],
                "class_index": int(index[i]),
                "probability": float(prob[i]),
                "unsure": bool(unsure[i]),
                "top_k": top,
            }
            for i, top in enumerate(self.top_k(top_k))
        ]

    def __len__(self) -> int:
        return len(self.probabilities)


class Classifier:
    """A trained model with its class names; predicts any images. Build with :meth:`load`."""

    def __init__(
        self,
        backend: TorchBackend | OnnxBackend,
        limits: Limits,
        min_confidence: float | Sequence[float] | None = None,
        photo_offsets: float | Sequence[float] | None = None,
        photo_shifts: bool | None = None,
    ) -> None:
        self._backend = backend
        self.limits = limits
        self.classes: tuple[str, ...] = tuple(backend.meta["classes"])
        # Per class, the top probability below which an answer is unsure.
        self.min_confidence: np.ndarray = model_rule(
            backend, "min_confidence", min_confidence, self.classes
        )
        self.min_confidence.flags.writeable = False  # shared with every Prediction
        # Per class, added to the logits of photos cut out of a cluttered background
        # (fitted by tools/bundle.py on the development photos; zeros unless the model has them).
        self.photo_offsets: np.ndarray = model_rule(
            backend, "photo_offsets", photo_offsets, self.classes
        )
        self.photo_shifts: bool = model_rule(backend, "photo_shifts", photo_shifts, self.classes)
        self.model_name: str = backend.meta["model"]
        self.tta: bool = bool(backend.meta.get("tta"))
        self.backend: str = backend.name
        self.precision: str = backend.precision  # fp32 | bf16 (torch), fp32 | int8 (ONNX)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        threads: int | None = None,
        min_confidence: float | Sequence[float] | None = None,
        precision: str | None = None,
        photo_offsets: float | Sequence[float] | None = None,
        photo_shifts: bool | None = None,
    ) -> Classifier:
        """Load a run directory, a model.safetensors, an .onnx file (ONNX Runtime) or the
        name of a bundled model; None loads the preferred bundled model (no training needed).

        ``threads``: the intra-op threads this model loads and predicts with (None: the
        library's default); PyTorch's process-wide setting is changed only during a call.
        ``min_confidence``: answers below this top probability (one, or one per class) are
        marked unsure (None: the model's own thresholds, else DEFAULT_MIN_CONFIDENCE).
        ``precision``: auto | fp32 | bf16 for a PyTorch model (None: the setting it was
        trained with, :func:`model_precision`; auto is bf16 where the CPU has bf16 units).
        An ONNX file computes in the precision it was exported in (fp32 or int8).
        ``photo_offsets``: added per class to the logits of segmented photos (None: the
        model's own, fitted by tools/bundle.py; 0: none).
        ``photo_shifts``: average each picture the pipeline changed over one-pixel shifts
        (fmnist.decision.PHOTO_SHIFTS; None: as the model file says, else True).
        """
        p = bundled.resolve(path)
        if p.suffix == ".onnx":
            backend: TorchBackend | OnnxBackend = onnx_backend(p, threads, precision)
            return cls(backend, limits, min_confidence, photo_offsets, photo_shifts)
        try:
            import torch  # noqa: F401 (only to see whether it is installed)
        except ImportError:
            if p.is_dir() and (p / ONNX_FILE).is_file():
                backend = onnx_backend(p / ONNX_FILE, threads, precision)
                return cls(backend, limits, min_confidence, photo_offsets, photo_shifts)
            raise ModelFileError(
                f"Loading {p} needs PyTorch, which is not installed. Export the model on a "
                "machine with PyTorch (`fmnist export RUN_DIR`) and load the .onnx file, or "
                "install the `train` extra."
            ) from None
        backend = TorchBackend(p, threads, precision)
        return cls(backend, limits, min_confidence, photo_offsets, photo_shifts)

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Model inputs (N, 28, 28) uint8 for one image, a list of images or an array batch.

        A uint8 (N, 28, 28) array is returned as is; other 3-D arrays whose last axis is
        not 1, 3 or 4 channels, and 4-D arrays, are batches; anything else is one image.
        Which of them were segmented photos is not returned: :meth:`predict` keeps it (or
        pass :func:`fmnist.images.picture_input`'s flags to :meth:`predict_inputs`).
        """
        return self._inputs(images)[0]

    def _inputs(self, images: ImageInput | Sequence[ImageInput]) -> tuple[np.ndarray, ...]:
        """:meth:`preprocess`'s inputs, which of them are segmented photos and which pictures
        the pipeline changed, (N,) bool each."""
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (SIZE,) * 2:
                return images, np.zeros(len(images), bool), np.zeros(len(images), bool)
            if images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in (1, 3, 4)):
                return self._stack(list(images))
            return self._stack([images], single=True)
        if isinstance(images, list | tuple):
            return self._stack(images)
        return self._stack([images], single=True)

    def _stack(
        self, images: Sequence[ImageInput], single: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = np.empty((len(images), SIZE, SIZE), np.uint8)
        photo, changed = np.zeros(len(images), bool), np.zeros(len(images), bool)
        for i, image in enumerate(images):
            try:
                out[i], photo[i], changed[i] = picture_input(image, self.limits)
            except ImageError as e:
                raise (e if single else ImageError(f"image {i}: {e}", e.code)) from None
        return out, photo, changed

    def predict(self, images: ImageInput | Sequence[ImageInput]) -> Prediction:
        """Predict one image, a list of images or an array batch (see :meth:`preprocess`)."""
        return self.predict_inputs(*self._inputs(images))

    def predict_inputs(
        self, x: np.ndarray, photo: np.ndarray | None = None, changed: np.ndarray | None = None
    ) -> Prediction:
        """Predict model inputs: uint8 (N, 28, 28), garment light on black.

        ``photo`` (N,) bool marks the inputs cut out of a cluttered background (as
        :func:`fmnist.images.picture_input` says): their logits get :attr:`photo_offsets`.
        ``changed`` (N,) bool marks the pictures the pipeline changed: with
        :attr:`photo_shifts`, each is averaged with its copies moved by one pixel.
        """
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (SIZE, SIZE):
            raise ValueError(
                f"model inputs must be uint8 (N, {SIZE}, {SIZE}), got {x.dtype} {x.shape}; "
                "use Classifier.predict for other images."
            )
        photo, changed = row_flags(len(x), photo=photo, changed=changed)
        logits = self._backend.logits(np.ascontiguousarray(x)).astype(np.float64)
        if self.photo_shifts and changed.any():
            logits[changed] = shift_averaged(self._backend.logits, x[changed], logits[changed])
        logits[photo] += self.photo_offsets  # (C,) broadcast over the photos' rows
        return Prediction(softmax(logits), self.classes, x, self.min_confidence, photo)

    def predict_each(
        self,
        images: Sequence[ImageInput],
        names: Sequence[str | None] | None = None,
        limits: Limits | None = None,
    ) -> tuple[Prediction, list[int | ImageError]]:
        """Predict images of which some may fail, the good ones in one batch.

        Returns the Prediction of the images that could be read, in order, and per image
        its row in that Prediction or the ImageError that stopped it. ``names`` name the
        images in the errors; ``limits`` default to the classifier's.
        """
        inputs: list[tuple[np.ndarray, bool, bool]] = []
        outcomes: list[int | ImageError] = []
        for i, image in enumerate(images):
            try:
                name = names[i] if names is not None else None
                inputs.append(picture_input(image, limits or self.limits, name))
                outcomes.append(len(inputs) - 1)
            except ImageError as e:
                outcomes.append(e)
        if not inputs:  # an empty batch: no image could be read
            return self.predict_inputs(np.empty((0, SIZE, SIZE), np.uint8)), outcomes
        x, photo, changed = zip(*inputs, strict=True)
        return self.predict_inputs(np.stack(x), np.array(photo), np.array(changed)), outcomes

    def __repr__(self) -> str:
        return (
            f"Classifier(model={self.model_name!r}, backend={self.backend!r}, tta={self.tta}, "
            f"precision={self.precision!r}, photo_shifts={self.photo_shifts})"
        )


from .imagefiles import image_extensions, image_files, predict_files  # noqa: E402 (re-export)
