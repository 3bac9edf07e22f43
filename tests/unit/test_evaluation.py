"""Metrics against hand-computed values, calibration, features and the model summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmnist.calibration import calibration_bins, expected_calibration_error, fit_temperature
from fmnist.evaluation import compute_metrics
from fmnist.features import embed_2d
from fmnist.models import (
    Normalized,
    count_params,
    create_model,
    model_summary,
)

CLASSES3 = ("a", "b", "c")


def crafted():
    """Six predictions over three classes: predicted [0, 0, 1, 1, 2, 0], one mistake."""
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.2, 0.7],
            [0.5, 0.1, 0.4],  # the mistake: true 2, predicted 0, second guess right
        ]
    )
    return probs, labels


def test_metrics_match_a_hand_computed_confusion_matrix():
    probs, labels = crafted()
    m = compute_metrics(probs, labels, CLASSES3)
    # By hand: rows = true, columns = predicted.
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["top2_accuracy"] == pytest.approx(1.0)  # the one mistake is a second guess
    # class 0: precision 2/3, recall 1; class 1: 1, 1; class 2: 1, 1/2.
    expected = [(2 / 3, 1.0, 0.8, 2), (1.0, 1.0, 1.0, 2), (1.0, 0.5, 2 / 3, 2)]
    for row, (p, r, f1, n) in zip(m["per_class"], expected, strict=True):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f1))
        assert row["support"] == n
    assert m["macro_precision"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 1 + 2 / 3) / 3)
    nll = -np.mean(np.log([0.7, 0.6, 0.8, 0.5, 0.7, 0.4]))
    assert m["loss"] == pytest.approx(nll)
    assert [r["class"] for r in m["per_class"]] == list(CLASSES3)


def test_ece_is_zero_when_calibrated_and_positive_otherwise():
    # 10 images at 80 % confidence with 8 right, 5 at 60 % with 3 right: calibrated.
    conf = np.r_[np.full(10, 0.8), np.full(5, 0.6)]
    correct = np.r_[np.ones(8), np.zeros(2), np.ones(3), np.zeros(2)].astype(bool)
    labels = np.where(correct, 0, 1)
    probs = np.stack([conf, 1 - conf], 1)  # always predicts class 0 with probability conf
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Same confidences, every prediction right: the model is under-confident.
    assert expected_calibration_error(probs, np.zeros(15, int)) == pytest.approx(
        (10 * 0.2 + 5 * 0.4) / 15
    )
    bins = calibration_bins(probs, labels)
    assert bins["count"].sum() == 15 and len(bins["edges"]) == 16
    filled = bins["count"] > 0
    assert np.allclose(bins["accuracy"][filled], bins["confidence"][filled])
    assert np.isnan(bins["accuracy"][~filled]).all()


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (np.full((4, 2), 0.5), np.zeros(4, int), r"shape \(N, 3\)"),
        (np.full((4, 3), 1 / 3), np.zeros(3, int), r"shape \(4,\)"),
        (np.full((4, 3), 1 / 3), np.array([0, 1, 2, 3]), r"integers in \[0, 2\]"),
        (np.full((4, 3), 0.5), np.zeros(4, int), "sum to 1"),
    ],
)
def test_bad_predictions_are_refused(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(probs, labels, CLASSES3)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_of_the_labels(true_t):
    gen = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(20_000, 10, generator=gen)  # labels drawn from softmax(z): T = 1
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=gen).squeeze(1)
    assert fit_temperature(z * true_t, labels) == pytest.approx(true_t, rel=0.05)
    with torch.inference_mode():  # as predict_logits returns them
        assert fit_temperature(z * true_t, labels) == pytest.approx(true_t, rel=0.05)
    assert fit_temperature(z, z.argmax(1)) == pytest.approx(0.05)  # no mistakes: the bound


def test_embed_2d_pca_and_tsne():
    rng = np.random.default_rng(0)
    features = np.r_[rng.normal(0, 1, (20, 8)), rng.normal(8, 1, (20, 8))]
    for method in ("pca", "tsne"):
        points = embed_2d(features, method)
        assert points.shape == (40, 2)
        # Two well-separated clusters stay apart: centre distance exceeds the spreads.
        a, b = points[:20], points[20:]
        gap = np.linalg.norm(a.mean(0) - b.mean(0))
        assert gap > 2 * max(a.std(0).max(), b.std(0).max())
    with pytest.raises(ValueError, match="'pca' or 'tsne'"):
        embed_2d(features, "umap")


def test_model_summary_lists_layers_shapes_and_params():
    model = Normalized(create_model("seed"))
    text = model_summary(model)
    assert "net.features.0 (Conv2d)" in text and "(32, 26, 26)" in text
    assert "(1600,)" in text and text.rstrip().endswith(
        f"total params: {count_params(model):,d} (trainable: {count_params(model):,d})"
    )
    assert model.training  # the summary restores the training mode
