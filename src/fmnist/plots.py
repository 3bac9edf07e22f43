"""Figures as matplotlib ``Figure`` objects (no pyplot state); save them with ``save``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .data import CLASSES


def figure_path(path: str | Path) -> Path:
    """``path`` as a figure file that can be written (PNG, PDF, SVG or JPEG; no suffix: PNG),
    or an OutputError saying what is wrong."""
    from .rundir import output_file

    kinds = (".png", ".pdf", ".svg", ".jpg", ".jpeg") if Path(path).suffix else ()  # none: PNG
    return output_file(path, kinds)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` at ``path`` (format from the suffix, e.g. PNG) atomically; return the path."""
    import io

    from .rundir import atomic_write_bytes

    path = figure_path(path)  # before the drawing: a bad path is refused at once
    buf = io.BytesIO()  # whole in memory first: a full disk leaves no half-written figure
    fig.savefig(buf, format=path.suffix[1:].lower() or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (for notebooks and HTML pages), cropped like :func:`save`."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def history_figure(history: Sequence[dict], metric: str) -> Figure:
    """Training vs validation ``metric`` ('accuracy' or 'loss') per epoch, like the notebook."""
    epochs = [int(h["epoch"]) for h in history]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(epochs, [float(h[f"train_{metric}"]) for h in history], "o-", label="training")
    ax.plot(epochs, [float(h[f"val_{metric}"]) for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"Training and validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def sample_grid(
    images: np.ndarray, labels: np.ndarray, per_class: int = 10, seed: int = 0
) -> Figure:
    """A grid with one row per class and ``per_class`` random samples, class names as titles."""
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(per_class * 0.9, len(CLASSES) * 1.0))
    axes = fig.subplots(len(CLASSES), per_class, squeeze=False)
    for c, row in enumerate(axes):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if j < len(pick):
                ax.imshow(images[pick[j]], cmap="gray_r", vmin=0, vmax=255)
        row[0].set_ylabel(CLASSES[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"Fashion-MNIST samples ({per_class} per class)")
    return fig


def _draw_prediction(
    ax_img: Axes,
    ax_bar: Axes,
    image: np.ndarray,
    probabilities: np.ndarray,
    true_label: int | None,
    classes: Sequence[str],
    fontsize: float = 10,
) -> None:
    """Draw one image on ``ax_img`` and its probability bars on ``ax_bar``."""
    pred = int(np.argmax(probabilities))
    wrong = true_label is not None and true_label != pred
    ax_img.imshow(image, cmap="gray_r", vmin=0, vmax=255)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    title = f"predicted: {classes[pred]} ({probabilities[pred]:.0%})"
    if true_label is not None:
        title += f"\ntrue: {classes[true_label]}"
    ax_img.set_title(title, fontsize=fontsize, color="red" if wrong else "black")
    colors = ["#bbbbbb"] * len(classes)
    colors[pred] = "#d62728" if wrong else "#1f77b4"
    if wrong:
        colors[true_label] = "#2ca02c"
    ax_bar.barh(range(len(classes)), probabilities, color=colors)
    ax_bar.set_yticks(range(len(classes)), classes, fontsize=fontsize - 1)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability", fontsize=fontsize - 1)
    ax_bar.tick_params(axis="x", labelsize=fontsize - 1)


def prediction_figure(
    image: np.ndarray,
    probabilities: np.ndarray,
    true_label: int | None = None,
    classes: Sequence[str] = CLASSES,
) -> Figure:
    """The image beside a bar chart of the class probabilities (the notebook's figure)."""
    fig = Figure(figsize=(8, 3.2))
    ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    _draw_prediction(ax_img, ax_bar, image, probabilities, true_label, classes)
    return fig


def predictions_figure(
    images: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray | None = None,
    classes: Sequence[str] = CLASSES,
    cols: int = 3,
) -> Figure:
    """Several images (N, 28, 28), each beside its probability bars (N, C); mistakes in red."""
    n = len(images)
    if n == 0 or len(probabilities) != n or (labels is not None and len(labels) != n):
        raise ValueError(
            f"expected N >= 1 images with N probability rows and N labels, got {n} images, "
            f"{len(probabilities)} probability rows and "
            f"{'no' if labels is None else len(labels)} labels."
        )
    cols = min(cols, n)
    rows = -(-n // cols)  # ceiling division
    fig = Figure(figsize=(4.6 * cols, 2.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False, width_ratios=[1, 1.5] * cols)
    for k in range(rows * cols):
        ax_img, ax_bar = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        if k >= n:
            ax_img.set_axis_off()
            ax_bar.set_axis_off()
            continue
        label = None if labels is None else int(labels[k])
        _draw_prediction(ax_img, ax_bar, images[k], probabilities[k], label, classes, 8)
    return fig


def _check_confusion(confusion: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The confusion matrix as a (C, C) integer array, or a clear error."""
    cm = np.asarray(confusion)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(
            f"confusion matrix must be ({len(classes)}, {len(classes)}) for {len(classes)} "
            f"classes, got shape {cm.shape}; compute it with fmnist.evaluation.compute_metrics."
        )
    return cm


def confusion_matrix_figure(confusion: np.ndarray, classes: Sequence[str] = CLASSES) -> Figure:
    """The confusion matrix twice: counts, and row-normalised (each true class sums to 100 %)."""
    cm = _check_confusion(confusion, classes)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(16, 7), layout="constrained")
    for ax, values, title, fmt in zip(
        fig.subplots(1, 2),
        (cm, rates * 100),
        ("Counts", "Row-normalised (% of each true class)"),
        ("{:.0f}", "{:.1f}"),
        strict=True,
    ):
        im = ax.imshow(values, cmap="Blues")
        threshold = values.max() / 2  # white text on dark cells
        for (i, j), v in np.ndenumerate(values):
            if v:
                color = "white" if v > threshold else "black"
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=9)
        ax.set_yticks(range(len(classes)), classes, fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Confusion matrix ({int(cm.sum()):,d} test images)")
    return fig


def mistakes_figure(
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str] = CLASSES,
    n: int = 24,
    cols: int = 8,
) -> Figure:
    """The ``n`` most confident mistakes: each image with its predicted and true class."""
    if not len(images) == len(labels) == len(probabilities):
        raise ValueError(
            "expected one label and one probability row per image, got "
            f"{len(images)} images, {len(labels)} labels and {len(probabilities)} rows."
        )
    pred = probabilities.argmax(1)
    confidence = probabilities.max(1)
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    rows = max(1, -(-len(worst) // cols))
    fig = Figure(figsize=(1.5 * cols, 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, worst, strict=False):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(
            f"{classes[pred[i]]} {confidence[i]:.1%}\ntrue: {classes[labels[i]]}",
            fontsize=8,
            color="#b00000",
        )
    title = (
        f"The {len(worst)} most confident mistakes (predicted class, probability, true class)"
        if len(worst)
        else "No mistakes"
    )
    fig.suptitle(f"{title}; {len(wrong):,d} mistakes in {len(labels):,d} images", fontsize=11)
    return fig


def per_class_accuracy_figure(confusion: np.ndarray, classes: Sequence[str] = CLASSES) -> Figure:
    """Accuracy on each class's images (recall) as bars, with the overall accuracy marked."""
    cm = _check_confusion(confusion, classes)
    acc = np.diag(cm) / np.maximum(cm.sum(1), 1)
    overall = np.trace(cm) / max(cm.sum(), 1)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(range(len(classes)), acc, color=class_colors(len(classes)))
    ax.bar_label(bars, [f"{a:.1%}" for a in acc], padding=3, fontsize=8)
    ax.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"all: {overall:.1%}")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("accuracy on the test images of the class")
    ax.set_title("Per-class accuracy")
    return fig


def class_colors(n: int) -> list:
    """``n`` distinct class colours (matplotlib's tab10, repeated past ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def reliability_figure(bins: dict[str, np.ndarray], ece: float | None = None) -> Figure:
    """A reliability diagram: accuracy against confidence per bin, and the bins' counts.

    ``bins`` is :func:`fmnist.calibration.calibration_bins` output (edges, count, confidence,
    accuracy); a calibrated model's bars touch the diagonal.
    """
    edges, count = np.asarray(bins["edges"]), np.asarray(bins["count"])
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = count > 0
    fig = Figure(figsize=(5.5, 6), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(centers[filled], bins["accuracy"][filled], width=width[filled], color="#1f77b4",
           edgecolor="black", linewidth=0.5, label="accuracy")  # fmt: skip
    acc, conf = bins["accuracy"][filled], bins["confidence"][filled]
    ax.bar(centers[filled], np.abs(conf - acc), bottom=np.minimum(acc, conf),
           width=width[filled], facecolor=(0.84, 0.15, 0.16, 0.25), edgecolor="#d62728",
           hatch="//", label="gap to mean confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    title = "Reliability diagram" + (f" (ECE {ece:.2%})" if ece is not None else "")
    ax.set_title(title)
    ax_count.bar(centers, count, width=width, color="#7f7f7f")
    ax_count.set_yscale("log")
    ax_count.set_xlabel("confidence (top predicted probability)")
    ax_count.set_ylabel("images")
    return fig


def embedding_figure(
    points: np.ndarray,
    labels: np.ndarray,
    images: np.ndarray | None = None,
    classes: Sequence[str] = CLASSES,
    title: str = "Penultimate-layer features in 2-D",
) -> Figure:
    """A 2-D map (N, 2) of images coloured by class, with one thumbnail per class centre."""
    from matplotlib.colors import Normalize
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(
            f"points must be (N, 2) with one label each, got points {points.shape} and "
            f"{len(labels)} labels; project features with fmnist.features.embed_2d."
        )
    colors = class_colors(len(classes))
    fig = Figure(figsize=(9, 7), layout="constrained")
    ax = fig.subplots()
    for c, name in enumerate(classes):
        sel = labels == c
        ax.scatter(*points[sel].T, s=6, color=colors[c], label=name, alpha=0.7, linewidths=0)
        if images is not None and sel.any():
            # The image nearest the class median stands for the class on the map.
            centre = np.median(points[sel], axis=0)
            k = np.flatnonzero(sel)[np.argmin(((points[sel] - centre) ** 2).sum(1))]
            thumb = OffsetImage(images[k], cmap="gray_r", zoom=1.1, norm=Normalize(0, 255))
            ax.add_artist(AnnotationBbox(thumb, points[k], frameon=True, pad=0.1,
                                         bboxprops={"edgecolor": colors[c]}))  # fmt: skip
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({len(points):,d} test images)")
    return fig


def compare_figure(histories: dict[str, Sequence[dict]]) -> Figure:
    """Validation accuracy and loss per epoch of several runs, one line per run."""
    if not histories:
        raise ValueError("compare_figure needs at least one run's history, got none.")
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [int(h["epoch"]) for h in history]
        ax_acc.plot(epochs, [float(h["val_accuracy"]) for h in history], "o-", ms=3, label=name)
        ax_loss.plot(epochs, [float(h["val_loss"]) for h in history], "o-", ms=3, label=name)
    for ax, metric in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    fig.suptitle("Validation curves")
    return fig


def write_history_figures(run_dir: Path, history: list[dict]) -> None:
    """Write the notebook's two figures, accuracy.png and loss.png, into ``run_dir``."""
    for metric in ("accuracy", "loss"):
        save(history_figure(history, metric), Path(run_dir) / f"{metric}.png")
