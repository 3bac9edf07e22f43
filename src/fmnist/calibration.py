"""Calibration: how far the top probability is from the accuracy (ECE, Guo et al. 2017),
and temperature scaling, the one number fitted on the validation split that fixes most of it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration ...")


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


def check_predictions(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
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
    check_predictions(np.asarray(probs), np.asarray(labels), np.shape(probs)[-1])
    b = calibration_bins(probs, labels, n_bins)
    filled = b["count"] > 0
    gap = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float((b["count"][filled] * gap).sum() / b["count"].sum())
