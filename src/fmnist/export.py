"""Export a trained model to ONNX, checked against PyTorch on the whole test set.

The graph takes float32 pixels in [0, 1] shaped (N, 1, 28, 28), garment light on black,
with a dynamic batch dimension N, and returns logits (N, 10). Normalisation (and flip-TTA
when the model was trained with it) is inside the graph, and the class names, model name
and TTA flag are in the model's ``metadata_props``, so any ONNX reader can use the file
without fmnist. The file is written only after the parity check passes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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
from .errors import ExportError
from .predict import float_pixels, onnx_session, run_onnx, softmax
from .rundir import ONNX, atomic_write_bytes

INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
PROB_TOLERANCE = 1e-4  # largest allowed |p_torch - p_onnx| over all test images and classes


@dataclass
class ExportReport:
    """What `export` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path  # the .onnx file
    bytes: int  # its size
    images: int  # test images in the parity check
    max_prob_diff: float  # largest absolute difference of the probabilities
    label_mismatches: int  # images whose predicted class differs
    seconds: float  # export + check, wall clock


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
    onnx.helper.set_model_props(
        proto,
        {
            "classes": json.dumps(list(meta["classes"])),
            "model": str(meta["model"]),
            "tta": "true" if meta.get("tta") else "false",  # already applied inside the graph
            "input": "float32 pixels in [0, 1], shape (N, 1, 28, 28), garment light on black",
            "output": "logits (N, 10); softmax gives the class probabilities",
            "fmnist_version": __version__,
        },
    )
    proto.doc_string = "Fashion-MNIST classifier exported by fmnist"
    return proto.SerializeToString()


def default_output(model_path: str | os.PathLike) -> Path:
    """RUN_DIR/model.onnx beside the model's weights."""
    weights, _ = resolve(model_path)
    return weights.with_name(ONNX)


def check_output(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Return ``out`` as a Path if it can take an ONNX file, else say why (before any work)."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{flag} must end in .onnx, got {out}; e.g. {flag} model.onnx.")
    if not out.parent.is_dir():
        raise ExportError(f"The output folder {out.parent} does not exist; create it first.")
    return out


def export(
    model_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    tolerance: float = PROB_TOLERANCE,
) -> ExportReport:
    """Export a run directory or model file to ONNX after checking it on the test set.

    Raises :class:`ExportError` (and writes nothing) when any probability differs by more
    than ``tolerance`` or any predicted label differs from PyTorch's.
    """
    from .evaluation import score_test

    start = time.perf_counter()
    out = check_output(out if out is not None else default_output(model_path))
    model, meta = load_model(model_path)
    data = to_onnx(model, meta)
    scored = score_test(  # fp32: the precision of the exported graph
        model, tta=bool(meta.get("tta")), classes=meta["classes"], data_dir=data_dir,
        precision="fp32",
    )  # fmt: skip
    torch_probs, x_test = scored.probabilities, scored.images
    onnx_probs = softmax(run_onnx(onnx_session(data), float_pixels(x_test)))
    diff = float(np.abs(torch_probs - onnx_probs).max())
    mismatches = int((torch_probs.argmax(1) != onnx_probs.argmax(1)).sum())
    if diff > tolerance or mismatches:
        raise ExportError(
            f"ONNX Runtime disagrees with PyTorch on the {len(x_test):,d} test images: largest "
            f"probability difference {diff:.2e} (allowed {tolerance:.0e}), {mismatches} "
            f"different labels (allowed 0). Nothing was written to {out}. Report this with "
            f"your torch ({torch.__version__}) and onnxruntime versions."
        )
    atomic_write_bytes(out, data)
    return ExportReport(out, len(data), len(x_test), diff, mismatches, time.perf_counter() - start)
