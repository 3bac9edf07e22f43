"""Export a trained model to ONNX, checked against PyTorch on the whole test set.

The graph takes float32 pixels in [0, 1] shaped (N, 1, 28, 28), garment light on black,
with a dynamic batch dimension N, and returns logits (N, 10). Normalisation (and flip-TTA
when the model was trained with it) is inside the graph, and the class names, model name
and TTA flag are in the model's ``metadata_props``, so any ONNX reader can use the file
without fmnist. The file is written only after the parity check passes.

``int8=True`` writes a statically quantised model instead (ONNX Runtime's quantize_static,
QDQ format: int8 weights per channel, uint8 activations whose ranges are calibrated on
training images). Its check is looser, as rounding to 8 bits must be: the labels agree with
PyTorch's on at least 99.5 % of the test set and the test accuracy drops by at most 0.3
points. Its ``metadata_props`` say ``precision: int8``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import load_model, resolve
from .decision import shifts_setting
from .errors import ExportError
from .predict import class_offsets, class_thresholds, float_pixels, onnx_session, run_onnx, softmax
from .rundir import ONNX, atomic_write_bytes, output_file

INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
PROB_TOLERANCE = 1e-4  # largest allowed |p_torch - p_onnx| over all test images and classes
INT8_FILE = "model.int8.onnx"  # the name `fmnist export --int8` gives it in a run directory
MIN_AGREEMENT = 0.995  # int8: the share of test images whose label must match PyTorch's
MAX_ACCURACY_DROP = 0.003  # int8: the test accuracy it may lose against PyTorch (0.3 points)
CALIBRATION_IMAGES = 512  # int8: training images whose activations set the value ranges


@dataclass
class ExportReport:
    """What `export` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path  # the .onnx file
    bytes: int  # its size
    images: int  # test images in the parity check
    max_prob_diff: float  # largest absolute difference of the probabilities
    label_mismatches: int  # images whose predicted class differs
    seconds: float  # export + check, wall clock
    precision: str = "fp32"  # fp32 | int8
    accuracy: float | None = None  # test accuracy of the ONNX model
    reference_accuracy: float | None = None  # test accuracy of the PyTorch model (fp32)


class _FlipAverage(nn.Module):
    """Logits averaged over the image and its mirror image (the model's flip-TTA)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, 28, 28) -> (N, 10)
        """Return TTA-averaged logits."""
        return (self.model(x) + self.model(x.flip(-1))) / 2


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes about optional packages (torchvision) and deprecations."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs notes through the root logger; keep only errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def to_onnx(model: nn.Module, meta: dict[str, Any]) -> bytes:
    """Serialise ``model`` (a Normalized module) to ONNX bytes with fmnist's metadata."""
    import onnx

    module = (_FlipAverage(model) if meta.get("tta") else model).eval()
    example = torch.rand(2, 1, 28, 28)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                verbose=False,
            )
    except Exception as e:  # the exporter raises many internal error types
        raise ExportError(f"torch.onnx.export failed for model {meta['model']!r}: {e}") from e
    proto = program.model_proto
    props = {
        "classes": json.dumps(list(meta["classes"])),
        "model": str(meta["model"]),
        "tta": "true" if meta.get("tta") else "false",  # already applied inside the graph
        "input": "float32 pixels in [0, 1], shape (N, 1, 28, 28), garment light on black",
        "output": "logits (N, 10); softmax gives the class probabilities",
        "fmnist_version": __version__,
    }
    if "min_confidence" in meta:  # a bundled model's unsure thresholds travel with the file
        thresholds = class_thresholds(meta["min_confidence"], meta["classes"])  # checked
        props["min_confidence"] = json.dumps(thresholds.tolist())
    if "photo_offsets" in meta:  # and its offsets for segmented photos
        props["photo_offsets"] = json.dumps(
            class_offsets(meta["photo_offsets"], meta["classes"]).tolist()
        )
    if "photo_shifts" in meta:  # and whether they were fitted with the shifts averaged
        props["photo_shifts"] = "true" if shifts_setting(meta["photo_shifts"]) else "false"
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = "Fashion-MNIST classifier exported by fmnist"
    return proto.SerializeToString()


def default_output(model_path: str | os.PathLike, int8: bool = False) -> Path:
    """RUN_DIR/model.onnx (or model.int8.onnx) beside the model's weights."""
    weights, _ = resolve(model_path)
    return weights.with_name(INT8_FILE if int8 else ONNX)


def calibration_images(
    data_dir: str | os.PathLike | None = None, n: int = CALIBRATION_IMAGES, seed: int = 0
) -> np.ndarray:
    """``n`` training images chosen at random (uint8 (n, 28, 28)): the int8 calibration set."""
    from .data import load_data

    (x_train, _), _ = load_data(data_dir)
    return x_train[np.sort(np.random.default_rng(seed).choice(len(x_train), n, replace=False))]


def quantize_int8(fp32: bytes, images: np.ndarray, batch: int = 64) -> bytes:
    """An fp32 ONNX model statically quantised to int8 (QDQ), calibrated on uint8 ``images``.

    Weights: int8 per output channel; activations: uint8 with MinMax ranges (u8s8, the
    combination ONNX Runtime's x86 kernels run fastest, with VNNI where the CPU has it).
    The metadata of the fp32 model is kept, with ``precision: int8`` added.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    pixels = float_pixels(images)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(pixels), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.batches, None)
            return None if i is None else {INPUT_NAME: pixels[i : i + batch]}

    with tempfile.TemporaryDirectory(prefix="fmnist-int8-") as tmp:
        src, pre, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        try:
            # Shape inference and graph clean-up first, as ONNX Runtime recommends.
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            with _quiet_root_logger():  # per-channel notes on batch-norm vectors
                quantize_static(
                    str(pre), str(dst), Batches(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )  # fmt: skip
        except Exception as e:  # ONNX Runtime's tools raise many internal error types
            raise ExportError(f"int8 quantisation failed ({type(e).__name__}: {e}).") from e
        proto = onnx.load(str(dst))
    props = {p.key: p.value for p in onnx.load_from_string(fp32).metadata_props}
    props |= {"precision": "int8", "calibration": f"{len(images)} training images"}
    onnx.helper.set_model_props(proto, props)
    return proto.SerializeToString()


def _check_int8(torch_probs: np.ndarray, onnx_probs: np.ndarray, labels: np.ndarray,
                out: Path) -> tuple[float, float]:  # fmt: skip
    """(int8 accuracy, PyTorch accuracy); raises ExportError when int8 strays too far."""
    agreement = float((torch_probs.argmax(1) == onnx_probs.argmax(1)).mean())
    acc, ref = (float((p.argmax(1) == labels).mean()) for p in (onnx_probs, torch_probs))
    if agreement < MIN_AGREEMENT or ref - acc > MAX_ACCURACY_DROP:
        raise ExportError(
            f"The int8 model agrees with PyTorch on {agreement:.2%} of the {len(labels):,d} "
            f"test images (needed at least {MIN_AGREEMENT:.1%}) and scores {acc:.4f} against "
            f"PyTorch's {ref:.4f} (a drop of {100 * (ref - acc):.2f} points; allowed "
            f"{100 * MAX_ACCURACY_DROP:.1f}). Nothing was written to {out}. Export in fp32 "
            "instead: `fmnist export RUN_DIR` without --int8."
        )
    return acc, ref


def check_output(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Return ``out`` as a Path if it can take an ONNX file, else say why (before any work)."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{flag} must end in .onnx, got {out}; e.g. {flag} model.onnx.")
    return output_file(out, (".onnx",))  # a folder, a missing folder, a file in the way


def export(
    model_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    tolerance: float = PROB_TOLERANCE,
    int8: bool = False,
) -> ExportReport:
    """Export a run directory or model file to ONNX after checking it on the test set.

    Raises :class:`ExportError` (and writes nothing) when any probability differs by more
    than ``tolerance`` or any predicted label differs from PyTorch's. With ``int8``, the
    model is quantised (:func:`quantize_int8`) and checked by labels and accuracy instead
    (MIN_AGREEMENT, MAX_ACCURACY_DROP); the default file is then model.int8.onnx.
    """
    from .evaluation import score_test

    start = time.perf_counter()
    out = check_output(out if out is not None else default_output(model_path, int8))
    model, meta = load_model(model_path)
    data = to_onnx(model, meta)
    scored = score_test(  # fp32: the precision of the exported graph
        model, tta=bool(meta.get("tta")), classes=meta["classes"], data_dir=data_dir,
        precision="fp32",
    )  # fmt: skip
    torch_probs, x_test = scored.probabilities, scored.images
    if int8:
        data = quantize_int8(data, calibration_images(data_dir))
    onnx_probs = softmax(run_onnx(onnx_session(data), float_pixels(x_test)))
    diff = float(np.abs(torch_probs - onnx_probs).max())
    mismatches = int((torch_probs.argmax(1) != onnx_probs.argmax(1)).sum())
    accuracy = _check_int8(torch_probs, onnx_probs, scored.labels, out) if int8 else (None, None)
    if not int8 and (diff > tolerance or mismatches):
        raise ExportError(
            f"ONNX Runtime disagrees with PyTorch on the {len(x_test):,d} test images: largest "
            f"probability difference {diff:.2e} (allowed {tolerance:.0e}), {mismatches} "
            f"different labels (allowed 0). Nothing was written to {out}. Report this with "
            f"your torch ({torch.__version__}) and onnxruntime versions."
        )
    atomic_write_bytes(out, data)
    seconds = time.perf_counter() - start
    return ExportReport(out, len(data), len(x_test), diff, mismatches, seconds,
                        "int8" if int8 else "fp32", *accuracy)  # fmt: skip
