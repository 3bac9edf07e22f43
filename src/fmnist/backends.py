"""The two ways a Classifier runs a model: ONNX Runtime (an exported .onnx file, no torch)
and PyTorch (a checkpoint). Each turns uint8 model inputs (N, 28, 28) into logits (N, C)
and carries the model's metadata (classes, model name, flip-TTA, threshold, precision).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelFileError

BATCH = 1000  # images per ONNX Runtime call on the batch path


def float_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 pixels in [0, 1] shaped (N, 1, 28, 28)."""
    return x[:, None].astype(np.float32) / np.float32(255)  # numpy's twin of models.to_input


# ---------------------------------------------------------------- ONNX Runtime


def onnx_session(model: str | os.PathLike | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for an .onnx file or its bytes; ``threads`` intra-op."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:  # this session's own pool; nothing process-wide
        opts.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, pixels: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """Logits (N, C) for float32 pixels (N, 1, 28, 28), ``batch`` images per session call."""
    name = session.get_inputs()[0].name
    out = [
        session.run(None, {name: pixels[i : i + batch]})[0] for i in range(0, len(pixels), batch)
    ]
    if out:
        return np.concatenate(out)
    classes = session.get_outputs()[0].shape[-1]  # (N, C); C is fixed, N symbolic
    return np.empty((0, classes if isinstance(classes, int) else 0), np.float32)


def check_threads(threads: Any) -> int | None:
    """``threads`` if it is None or a whole number >= 0, else a ConfigError saying so."""
    if threads is None or (
        isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0
    ):
        return threads
    raise ConfigError(
        f"threads must be None or a whole number >= 0 (None or 0: all cores), got {threads!r}."
    )


class OnnxBackend:
    """An exported .onnx file run by ONNX Runtime; flip-TTA, if any, is inside the graph."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        check_threads(threads)
        self.path = path  # named in errors about the file's metadata
        if not path.is_file():
            raise ModelFileError(f"{path} does not exist; create it with `fmnist export`.")
        try:
            self.session = onnx_session(path, threads)
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
        # Thresholds and offsets: a number or a JSON list of them; photo_shifts: true or false.
        for key in ("min_confidence", "photo_offsets", "photo_shifts"):
            if key in props:
                try:
                    self.meta[key] = json.loads(props[key])
                except json.JSONDecodeError:  # kept as the string: the Classifier refuses it
                    self.meta[key] = props[key]
        self.precision = props.get("precision", "fp32")  # fp32, or int8 (`export --int8`)
        # NaN or infinite weights turn even a blank image's logits into NaN (0 * NaN): refuse
        # them here rather than answer NaN (which JSON cannot carry) for every image.
        blank = run_onnx(self.session, np.zeros((1, 1, 28, 28), np.float32))  # (1, C)
        if blank.shape != (1, len(self.meta["classes"])) or not np.isfinite(blank).all():
            raise ModelFileError(
                f"{path} answers a blank image with logits {blank.tolist()}, not one number "
                f"per class ({len(self.meta['classes'])}): its weights are not numbers (a "
                "diverged training) or do not match its metadata. Export it again from a run "
                "that loads (`fmnist export RUN_DIR`)."
            )

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 for model inputs uint8 (N, 28, 28)."""
        if not len(x):  # no session call: a symbolic class axis would give (0, 0)
            return np.empty((0, len(self.meta["classes"])), np.float32)
        return run_onnx(self.session, float_pixels(x))


def onnx_backend(path: Path, threads: int | None, precision: str | None) -> OnnxBackend:
    """The ONNX backend, refusing a precision the file was not exported in."""
    backend = OnnxBackend(path, threads)
    if precision not in (None, "auto", backend.precision):
        raise ConfigError(
            f"{path} is an ONNX model exported in {backend.precision}; it cannot compute in "
            f"{precision}. Pass precision=None or 'auto', or load the run directory (PyTorch) "
            "for bf16."
        )
    return backend


# ---------------------------------------------------------------- PyTorch


class TorchBackend:
    """A checkpoint run by PyTorch (imported here, not at module import).

    ``threads`` applies only while this backend loads and predicts (fmnist.system's
    torch_settings gives the caller's setting back). With 1, no OpenMP pool is started,
    which keeps a process that forks workers afterwards (gunicorn) safe.
    """

    name = "torch"

    def __init__(self, path: str | os.PathLike, threads: int | None, precision: str | None) -> None:
        import torch

        from .checkpoint import load_model
        from .system import resolve_precision, torch_settings

        self.threads = check_threads(threads)
        self.path = Path(path)  # named in errors about the file's metadata
        with torch_settings(threads):
            model, self.meta = load_model(path)
            # This backend owns the model: eval mode, and channels_last weights, which
            # predict_logits matches with channels_last inputs (2.5x faster on CPUs).
            self.model = model.eval().to(memory_format=torch.channels_last)
        self.tta = bool(self.meta.get("tta"))
        self.precision = resolve_precision(precision or model_precision(self.meta), "cpu")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 for model inputs uint8 (N, 28, 28)."""
        if not len(x):
            return np.empty((0, len(self.meta["classes"])), np.float32)
        import torch

        from .evaluation import predict_logits
        from .system import torch_settings

        x = x if x.flags.writeable else x.copy()  # torch.from_numpy warns on read-only arrays
        with torch_settings(self.threads):
            out = predict_logits(
                self.model, torch.from_numpy(x), tta=self.tta, precision=self.precision
            )
        return out.float().numpy()


def model_precision(meta: dict[str, Any]) -> str:
    """The precision setting a model was trained with (auto | fp32 | bf16), from model.json.

    Models saved before fmnist recorded it were trained in fp32.
    """
    return str((meta.get("config") or {}).get("precision", "fp32"))
