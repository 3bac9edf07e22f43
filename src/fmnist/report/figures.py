"""The report's figures, drawn into the run directory as PNGs with a caption each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..rundir import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EMBED_IMAGES = 1000  # test images in the feature map: t-SNE on 1,000 points takes ~2 s
EXAMPLES = 6  # test images in the example-prediction figure


def _curves(history: list[dict[str, float]]) -> dict[str, tuple[Figure, str]]:
    """The training-curve figures, or none for a run without history (an ensemble)."""
    from ..plots import history_figure

    if not history:
        return {}
    return {
        "accuracy.png": (
            history_figure(history, "accuracy"),
            "Training and validation accuracy per epoch: a widening gap means overfitting.",
        ),
        "loss.png": (history_figure(history, "loss"), "Training and validation loss per epoch."),
    }


def _embedding(
    model: Any, images: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> Figure:
    """t-SNE map of the penultimate features of a fixed sample of the test images."""
    from ..features import embed_2d, penultimate_features
    from ..plots import embedding_figure

    pick = np.sort(np.random.default_rng(0).choice(len(labels), EMBED_IMAGES, replace=False))
    points = embed_2d(penultimate_features(model, images[pick]), "tsne")
    title = "t-SNE of the penultimate-layer features"
    return embedding_figure(points, labels[pick], images[pick], classes, title=title)


def write_figures(run: Run, ev: Any, model: Any, classes: Sequence[str]) -> dict[str, str]:
    """Draw every figure of the report into the run directory; return {file name: caption}.

    ``ev`` is the :class:`~fmnist.evaluation.Evaluation` of ``model`` on the test set.
    """
    from ..calibration import calibration_bins
    from ..plots import (
        confusion_matrix_figure,
        mistakes_figure,
        per_class_accuracy_figure,
        predictions_figure,
        reliability_figure,
        save,
    )

    images, labels, probs = ev.images, ev.labels, ev.probabilities
    cm = np.array(ev.metrics["confusion_matrix"])
    figures = {
        **_curves(run.history()),  # empty for an ensemble: no curves
        "confusion_matrix.png": (
            confusion_matrix_figure(cm, classes),
            "Confusion matrix: rows are the true classes, columns the predictions; "
            "off-diagonal cells are the mistakes.",
        ),
        "per_class_accuracy.png": (
            per_class_accuracy_figure(cm, classes),
            "Accuracy on each class's test images; the dashed line is the overall accuracy.",
        ),
        "mistakes.png": (
            mistakes_figure(images, labels, probs, classes),
            "The test images the model gets wrong with the highest confidence.",
        ),
        "reliability.png": (
            reliability_figure(calibration_bins(probs, labels), ev.metrics["ece"]),
            "Reliability diagram: how often the model is right when it is p % sure; "
            "bars on the diagonal mean well-calibrated probabilities.",
        ),
        "embedding.png": (
            _embedding(model, images, labels, classes),
            "The features the last layer sees (in an ensemble, every member's side by "
            "side), mapped to 2-D with t-SNE: classes that "
            "overlap here are the ones the model confuses.",
        ),
        "predictions.png": (
            predictions_figure(images[:EXAMPLES], probs[:EXAMPLES], labels[:EXAMPLES], classes),
            f"The first {EXAMPLES} test images with the predicted probabilities.",
        ),
    }
    for name, (fig, _) in figures.items():
        save(fig, run / name)
    return {name: caption for name, (_, caption) in figures.items()}
