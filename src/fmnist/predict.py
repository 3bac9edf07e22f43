"""Classifier: load a trained model (checkpoint or ONNX file) and predict any images.

    clf = Classifier.load("runs/latest")           # or "model.onnx": no torch needed
    result = clf.predict(["shirt.jpg", "shoe.png"])
    result.label, result.probabilities              # ['Shirt', 'Sneaker'], (2, 10)

Images go through :func:`fmnist.images.to_model_input`; a uint8 batch (N, 28, 28) is taken
as model input as is (the dataset's convention, the fast path). torch is imported only by
the torch backend, so the ONNX backend runs without it.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .images import (
    DEFAULT_LIMITS,
    FORMATS,
    SIZE,
    ImageError,
    ImageInput,
    Limits,
    to_model_input,
    to_png,
)

BATCH = 1000  # images per ONNX Runtime call on the batch path
ONNX_FILE = "model.onnx"  # the name `fmnist export` gives the file inside a run directory


class ModelFileError(ValueError):
    """A model file that cannot be loaded for prediction."""


@dataclass
class Prediction:
    """Predictions for N images: probabilities, labels and the 28x28 inputs the model saw."""

    probabilities: np.ndarray  # (N, C) float64 softmax of the logits
    classes: tuple[str, ...]  # C class names
    images: np.ndarray  # (N, 28, 28) uint8, garment light on black

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

    def top_k(self, k: int = 3) -> list[list[dict[str, Any]]]:
        """Per image, the k most probable classes as [{label, probability}], best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [{"label": self.classes[j], "probability": float(p[j])} for j in row]
            for p, row in zip(self.probabilities, order, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.probabilities)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (N, C) in float64."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


class _TorchBackend:
    """A checkpoint run by PyTorch (imported here, not at module import)."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, threads: int | None) -> None:
        import torch

        from .checkpoint import load_model

        if threads:  # process-wide; before any work, so no OpenMP pool is started (fork-safe)
            torch.set_num_threads(threads)
        self.model, self.meta = load_model(path)
        self.tta = bool(self.meta.get("tta"))

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        from .evaluate import predict_logits

        x = x if x.flags.writeable else x.copy()  # torch.from_numpy warns on read-only arrays
        out = predict_logits(self.model, torch.from_numpy(x), tta=self.tta)
        return out.float().numpy()


class _OnnxBackend:
    """An exported .onnx file run by ONNX Runtime; flip-TTA, if any, is inside the graph."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; create it with `fmnist export`.")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf types
            raise ModelFileError(
                f"{path} is not a loadable ONNX model ({e}); export it again with "
                "`fmnist export RUN_DIR`."
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in props:
            raise ModelFileError(
                f"{path} lacks the 'classes' metadata that `fmnist export` writes; export it "
                "again with `fmnist export RUN_DIR`."
            )
        self.meta = {
            "classes": json.loads(props["classes"]),
            "model": props.get("model", "unknown"),
            "tta": props.get("tta") == "true",
            "fmnist_version": props.get("fmnist_version"),
        }
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        pixels = x[:, None].astype(np.float32) / 255.0  # (N, 1, 28, 28) in [0, 1]
        out = [
            self.session.run(None, {self.input_name: pixels[i : i + BATCH]})[0]
            for i in range(0, len(pixels), BATCH)
        ]
        return np.concatenate(out) if out else np.empty((0, len(self.meta["classes"])))


class Classifier:
    """A trained model with its class names; predicts any images. Build with :meth:`load`."""

    def __init__(self, backend: _TorchBackend | _OnnxBackend, limits: Limits) -> None:
        self._backend = backend
        self.limits = limits
        self.classes: tuple[str, ...] = tuple(backend.meta["classes"])
        self.model_name: str = backend.meta["model"]
        self.tta: bool = bool(backend.meta.get("tta"))
        self.backend: str = backend.name

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        limits: Limits = DEFAULT_LIMITS,
        threads: int | None = None,
    ) -> Classifier:
        """Load a run directory, a model.safetensors or an .onnx file (ONNX Runtime).

        ``threads`` sets the intra-op threads: ONNX Runtime's for this model, PyTorch's for
        the whole process (None: the library's default).
        """
        p = Path(path)
        if p.suffix == ".onnx":
            return cls(_OnnxBackend(p, threads), limits)
        try:
            import torch  # noqa: F401 (only to see whether it is installed)
        except ImportError:
            if p.is_dir() and (p / ONNX_FILE).is_file():
                return cls(_OnnxBackend(p / ONNX_FILE, threads), limits)
            raise ModelFileError(
                f"Loading {p} needs PyTorch, which is not installed. Export the model on a "
                "machine with PyTorch (`fmnist export RUN_DIR`) and load the .onnx file, or "
                "install the `train` extra."
            ) from None
        return cls(_TorchBackend(p, threads), limits)

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Model inputs (N, 28, 28) uint8 for one image, a list of images or an array batch.

        A uint8 (N, 28, 28) array is returned as is; other 3-D arrays whose last axis is
        not 1, 3 or 4 channels, and 4-D arrays, are batches; anything else is one image.
        """
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (SIZE,) * 2:
                return images
            if images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in (1, 3, 4)):
                return self._stack(list(images))
            return to_model_input(images, self.limits)[None]
        if isinstance(images, list | tuple):
            return self._stack(images)
        return to_model_input(images, self.limits)[None]

    def _stack(self, images: Sequence[ImageInput]) -> np.ndarray:
        out = np.empty((len(images), SIZE, SIZE), np.uint8)
        for i, image in enumerate(images):
            try:
                out[i] = to_model_input(image, self.limits)
            except ImageError as e:
                raise ImageError(f"image {i}: {e}", e.code) from None
        return out

    def predict(self, images: ImageInput | Sequence[ImageInput]) -> Prediction:
        """Predict one image, a list of images or an array batch (see :meth:`preprocess`)."""
        return self.predict_inputs(self.preprocess(images))

    def predict_inputs(self, x: np.ndarray) -> Prediction:
        """Predict model inputs: uint8 (N, 28, 28), garment light on black."""
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (SIZE, SIZE):
            raise ValueError(
                f"model inputs must be uint8 (N, {SIZE}, {SIZE}), got {x.dtype} {x.shape}; "
                "use Classifier.predict for other images."
            )
        probs = softmax(self._backend.logits(np.ascontiguousarray(x)))
        return Prediction(probs, self.classes, x)

    def __repr__(self) -> str:
        return f"Classifier(model={self.model_name!r}, backend={self.backend!r}, tta={self.tta})"


# ---------------------------------------------------------------- files (the CLI's batch mode)


def image_extensions() -> frozenset[str]:
    """File suffixes of the formats fmnist decodes, e.g. '.jpg', '.png' (lower case)."""
    from PIL import Image

    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in FORMATS)


def image_files(inputs: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Expand files, folders and globs to (path, error or None), in a stable order.

    A folder gives the image files (by suffix) in it and its subfolders; a glob its matches;
    anything else is taken as a file, so a missing one fails when it is read.
    """
    suffixes = image_extensions()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
            if not found:
                yield item, f"no image files ({', '.join(sorted(suffixes)[:6])}, ...) in {item}"
            yield from ((str(f), None) for f in found)
        elif not p.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                yield item, f"no files match the pattern {item!r}"
            yield from ((m, None) for m in matches if Path(m).is_file())
        else:
            yield item, None


def _unique_png(directory: Path, stem: str, taken: set[str]) -> Path:
    """directory/stem.png, or stem-2.png, stem-3.png ... if an earlier input took the name."""
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return directory / name


def predict_files(
    classifier: Classifier,
    inputs: Iterable[str],
    *,
    top_k: int = 3,
    save_preprocessed: str | os.PathLike | None = None,
    chunk: int = 256,
) -> Iterator[dict[str, Any]]:
    """Predict image files, folders and globs; one JSON-ready record per file, in order.

    A record has ``path``, ``label``, ``class_index``, ``probability`` and ``top_k`` (plus
    ``preprocessed``, the saved 28x28 PNG, with ``save_preprocessed``), or ``path`` and
    ``error`` for a file that failed; failures never stop the other files.
    """
    out_dir = Path(save_preprocessed) if save_preprocessed is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    files = iter(image_files(inputs))
    while batch := list(islice(files, chunk)):
        records: list[dict[str, Any]] = []
        good: list[np.ndarray] = []
        for path, error in batch:
            if error is None:
                try:
                    good.append(to_model_input(path, classifier.limits))
                except ImageError as e:
                    error = str(e)
            records.append({"path": path, "error": error} if error else {"path": path})
        ok = [r for r in records if "error" not in r]
        if ok:
            result = classifier.predict_inputs(np.stack(good))
            for i, (r, top) in enumerate(zip(ok, result.top_k(top_k), strict=True)):
                r.update(
                    label=result.label[i],
                    class_index=int(result.class_index[i]),
                    probability=float(result.probability[i]),
                    top_k=top,
                )
                if out_dir is not None:
                    png = _unique_png(out_dir, Path(r["path"]).stem, taken)
                    png.write_bytes(to_png(result.images[i]))
                    r["preprocessed"] = str(png)
        yield from records
