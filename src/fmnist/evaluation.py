"""Batch inference and metrics: accuracy, per-class scores, confusion, calibration, features."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import CLASSES, load_data
from .models import to_input
from .system import autocast, resolve_precision

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration ...")


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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T that minimises the cross-entropy of logits / T (Guo et al. 2017)."""
    with torch.inference_mode(False), torch.enable_grad():
        # A clone outside inference mode: predict_logits's output cannot enter autograd.
        logits, labels = logits.detach().float().clone(), labels.to(logits.device).long()
        log_t = torch.zeros((), device=logits.device, requires_grad=True)  # T = exp(log_t)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        opt.step(closure)
    # Bounded: with no mistakes to learn from (a tiny validation set), the loss keeps falling
    # as T -> 0, which would make every probability 1.
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits`` against integer ``labels``."""
    labels = labels.to(logits.device).long()
    loss = F.cross_entropy(logits.float(), labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax of ``logits`` (N, C) as float64 numpy, so that rows sum to 1 to 1e-12."""
    return torch.softmax(logits.detach().cpu().double(), dim=1).numpy()


def _check_predictions(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    """Refuse arrays that are not (N, C) probabilities and (N,) labels in [0, C)."""
    if probs.ndim != 2 or probs.shape[1] != n_classes or len(probs) == 0:
        raise ValueError(
            f"probabilities must have shape (N, {n_classes}) with N >= 1, got {probs.shape}; "
            "pass softmax outputs, e.g. fmnist.evaluation.probabilities(logits)."
        )
    if labels.shape != (len(probs),):
        raise ValueError(
            f"labels must have shape ({len(probs)},) to match the probabilities, "
            f"got {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must be integers in [0, {n_classes - 1}], got dtype {labels.dtype} with "
            f"range [{labels.min()}, {labels.max()}]."
        )
    sums = probs.sum(1)
    if probs.min() < 0 or not np.allclose(sums, 1, atol=1e-4):
        raise ValueError(
            "probabilities must be non-negative rows that sum to 1, found row sums in "
            f"[{sums.min():.4g}, {sums.max():.4g}] and minimum {probs.min():.4g}; apply a "
            "softmax to logits first (fmnist.evaluation.probabilities)."
        )


def calibration_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Top-label calibration per equal-width confidence bin (i/n, (i+1)/n].

    Returns ``edges`` (n_bins + 1,), ``count``, ``confidence`` (mean top probability) and
    ``accuracy`` (fraction correct), each (n_bins,); empty bins hold NaN.
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc}


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over confidence bins."""
    _check_predictions(np.asarray(probs), np.asarray(labels), np.shape(probs)[-1])
    b = calibration_bins(probs, labels, n_bins)
    filled = b["count"] > 0
    gap = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float((b["count"][filled] * gap).sum() / b["count"].sum())


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
    _check_predictions(probs, labels, len(classes))
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
