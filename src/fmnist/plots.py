"""Figures as matplotlib ``Figure`` objects (no pyplot state); save them with ``save``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .data import CLASSES


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG at ``path`` and return the path."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


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
    fig.suptitle("Fashion-MNIST samples (ten per class)")
    return fig


def prediction_figure(
    image: np.ndarray,
    probabilities: np.ndarray,
    true_label: int | None = None,
    classes: Sequence[str] = CLASSES,
) -> Figure:
    """The image beside a bar chart of the class probabilities (the notebook's figure)."""
    pred = int(np.argmax(probabilities))
    fig = Figure(figsize=(8, 3.2))
    ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(image, cmap="gray_r", vmin=0, vmax=255)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    title = f"predicted: {classes[pred]} ({probabilities[pred]:.0%})"
    if true_label is not None:
        title += f"\ntrue: {classes[true_label]}"
    ax_img.set_title(title, fontsize=10, color="black" if true_label in (None, pred) else "red")
    colors = ["#bbbbbb"] * len(classes)
    colors[pred] = "#d62728" if true_label is not None and true_label != pred else "#1f77b4"
    if true_label is not None and true_label != pred:
        colors[true_label] = "#2ca02c"
    ax_bar.barh(range(len(classes)), probabilities, color=colors)
    ax_bar.set_yticks(range(len(classes)), classes, fontsize=9)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    return fig
