"""Batch inference and metrics: accuracy, per-class scores, confusion, calibration, features."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .calibration import ECE_BINS, check_predictions, expected_calibration_error
from .data import CLASSES, load_data
from .models import to_input
from .predict import softmax
from .system import autocast, resolve_precision


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    tta: bool = False,
    precision: str = "auto",
) -> torch.Tensor:
    """Logits (N, 10) float32 for uint8 images (N, 28, 28), in large batches; flip-TTA if asked.

    ``precision``: auto | fp32 | bf16 (:func:`fmnist.system.resolve_precision`; auto is bf16
    autocast where the hardware has bf16 units).

    The model is run in eval mode and left in the mode it came in. The input takes the
    memory format of the model's convolution weights: a channels_last input through
    contiguous weights (or the reverse) runs 2.5x slower than either matched pair.
    Batches of 256: 2x the images/s of batches of 1000, whose activations (86 MB for the
    seed CNN) glibc maps and unmaps fresh every batch unless told to keep freed memory
    (fmnist.system.torch_settings does).
    """
    conv = next((p for p in model.parameters() if p.ndim == 4), None)
    nhwc = conv is not None and conv.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    device = next(model.parameters()).device
    amp = resolve_precision(precision, device)
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(images), batch_size):
            x = to_input(images[i : i + batch_size].to(device)).contiguous(memory_format=fmt)
            with autocast(amp, device):
                logits = model(x).float()
                if tta:  # clothes are left-right symmetric: average over the mirror image
                    logits = (logits + model(x.flip(-1)).float()) / 2
            out.append(logits)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits`` against integer ``labels``."""
    labels = labels.to(logits.device).long()
    loss = F.cross_entropy(logits.float(), labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax of ``logits`` (N, C) as float64 numpy, so that rows sum to 1 to 1e-12."""
    return softmax(logits.detach().float().cpu().numpy())  # the one softmax, predict's


def compute_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str] = CLASSES,
    n_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """All metrics of predicted probabilities (N, C) against labels (N,), JSON-ready.

    ``loss`` is the mean negative log-likelihood (cross-entropy) in nats per image;
    ``confusion_matrix[i][j]`` counts images of true class i predicted as class j.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    check_predictions(probs, labels, len(classes))
    ids = list(range(len(classes)))
    pred = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=ids, zero_division=0
    )
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),  # = the accuracy on this class's images
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]
    return {
        "images": len(labels),
        "accuracy": float(accuracy_score(labels, pred)),
        "loss": float(log_loss(labels, probs, labels=ids)),
        "top2_accuracy": float(top_k_accuracy_score(labels, probs, k=2, labels=ids)),
        "ece": expected_calibration_error(probs, labels, n_bins),
        "ece_bins": n_bins,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(labels, pred, labels=ids).tolist(),
    }


@dataclass
class Evaluation:
    """A model's predictions on a labelled set and the metrics computed from them."""

    probabilities: np.ndarray  # (N, C) float64, softmax of the (TTA-averaged) logits
    labels: np.ndarray  # (N,) true class indices
    metrics: dict[str, Any]  # compute_metrics() output
    images: np.ndarray | None = None  # (N, 28, 28) uint8, the images scored

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class indices (N,)."""
        return self.probabilities.argmax(1)


def evaluate(
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    *,
    tta: bool = False,
    classes: Sequence[str] = CLASSES,
    batch_size: int = 256,
    precision: str = "auto",
) -> Evaluation:
    """Predict uint8 ``images`` (N, 28, 28) and score them against ``labels`` (N,).

    ``precision``: auto | fp32 | bf16, as in :func:`predict_logits`.
    """
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 3:
        raise ValueError(
            f"images must be uint8 (N, 28, 28) like fmnist.load_data() returns, got "
            f"{x.dtype} {tuple(x.shape)}."
        )
    logits = predict_logits(model, x, batch_size=batch_size, tta=tta, precision=precision)
    probs = probabilities(logits)
    labels = np.asarray(labels).astype(np.int64)
    return Evaluation(probs, labels, compute_metrics(probs, labels, classes), x.cpu().numpy())


def score_test(
    model: torch.nn.Module,
    *,
    tta: bool = False,
    classes: Sequence[str] = CLASSES,
    data_dir: str | os.PathLike | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int = 256,
    precision: str = "auto",
) -> Evaluation:
    """Score ``model`` on the Fashion-MNIST test set: the one place the test set is scored.

    ``test`` = (images, labels) saves loading the set again when scoring several models.
    """
    if test is None:
        _, test = load_data(data_dir)
    return evaluate(model, test[0], test[1], tta=tta, classes=classes, batch_size=batch_size,
                    precision=precision)  # fmt: skip
