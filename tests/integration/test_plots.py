"""Every figure function draws a non-empty PNG of the expected size from a real small run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fmnist import plots
from fmnist.calibration import calibration_bins
from fmnist.features import embed_2d, penultimate_features
from fmnist.report import evaluate_run
from fmnist.rundir import Run

DPI = 50  # small PNGs keep the test fast; sizes scale with it


@pytest.fixture(scope="module")
def scored(small_run):
    """(Evaluation, model, test images, history) of the session's small run."""
    ev, model, _, x_test = evaluate_run(small_run)
    return ev, model, x_test, Run(small_run).history()


def figure_builders(scored):
    ev, model, x, history = scored
    cm = np.array(ev.metrics["confusion_matrix"])
    probs, y = ev.probabilities, ev.labels
    sub = slice(0, 300)
    return {
        "history_figure": lambda: plots.history_figure(history, "accuracy"),
        "sample_grid": lambda: plots.sample_grid(x, y, per_class=4),
        "prediction_figure": lambda: plots.prediction_figure(x[0], probs[0], int(y[0])),
        "predictions_figure": lambda: plots.predictions_figure(x[:5], probs[:5], y[:5]),
        "confusion_matrix_figure": lambda: plots.confusion_matrix_figure(cm),
        "per_class_accuracy_figure": lambda: plots.per_class_accuracy_figure(cm),
        "mistakes_figure": lambda: plots.mistakes_figure(x, y, probs, n=16),
        "reliability_figure": lambda: plots.reliability_figure(
            calibration_bins(probs, y), ev.metrics["ece"]
        ),
        "embedding_figure": lambda: plots.embedding_figure(
            embed_2d(penultimate_features(model, x[sub]), "pca"), y[sub], x[sub]
        ),
        "compare_figure": lambda: plots.compare_figure({"a": history, "b": history}),
    }


# Every public function of fmnist.plots that returns a Figure.
NAMES = sorted(
    name
    for name, f in vars(plots).items()
    if callable(f)
    and not name.startswith("_")
    and getattr(f, "__annotations__", {}).get("return") == "Figure"
)


@pytest.mark.parametrize("name", NAMES)
def test_figure_is_a_nonempty_png_of_the_expected_size(name, scored, tmp_path):
    fig = figure_builders(scored)[name]()
    path = plots.save(fig, tmp_path / f"{name}.png", dpi=DPI)
    with Image.open(path) as im:
        assert im.format == "PNG"
        size = np.array(im.size)
        pixels = np.asarray(im.convert("L"), dtype=float)
    nominal = fig.get_size_inches() * DPI
    # bbox_inches="tight" trims margins or grows for labels, but only by a few tens of %.
    assert np.all(size > 0.6 * nominal) and np.all(size < 1.4 * nominal), (size, nominal)
    assert pixels.std() > 10  # something was drawn, not a blank canvas


def test_every_figure_function_is_tested(scored):
    assert len(NAMES) == 10 and sorted(figure_builders(scored)) == NAMES


def test_mistakes_are_the_most_confident_ones_and_none_is_handled():
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.array([0, 1, 2, 0])
    probs = np.array([[0.1, 0.9, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4], [1.0, 0.0, 0.0]])
    fig = plots.mistakes_figure(images, labels, probs, classes=("a", "b", "c"), n=5, cols=5)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["b 90.0%\ntrue: a", "a 60.0%\ntrue: c"]  # most confident first
    assert "2 mistakes in 4 images" in fig.get_suptitle()
    right = plots.mistakes_figure(images, labels, np.eye(3)[labels], classes=("a", "b", "c"))
    assert right.get_suptitle().startswith("No mistakes")


def test_confusion_matrix_shows_counts_and_row_percentages():
    cm = np.array([[3, 1], [0, 4]])
    fig = plots.confusion_matrix_figure(cm, classes=("a", "b"))
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes if ax.texts]
    assert texts == [["3", "1", "4"], ["75.0", "25.0", "100.0"]]  # zero cells stay empty


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plots.confusion_matrix_figure(np.zeros((3, 3))), r"must be \(10, 10\)"),
        (lambda: plots.per_class_accuracy_figure(np.zeros(10)), r"must be \(10, 10\)"),
        (
            lambda: plots.predictions_figure(np.zeros((2, 28, 28)), np.zeros((3, 10))),
            "got 2 images, 3 probability rows",
        ),
        (lambda: plots.embedding_figure(np.zeros((5, 3)), np.zeros(5)), r"must be \(N, 2\)"),
        (lambda: plots.compare_figure({}), "at least one run"),
        (
            lambda: plots.mistakes_figure(np.zeros((3, 28, 28)), np.zeros(2), np.zeros((3, 10))),
            "3 images, 2 labels and 3 rows",
        ),
    ],
)
def test_bad_figure_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_png_bytes_matches_save(tmp_path):
    fig = plots.per_class_accuracy_figure(np.eye(10, dtype=int) * 5)
    data = plots.png_bytes(fig, dpi=40)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data == plots.save(fig, tmp_path / "f.png", dpi=40).read_bytes()
