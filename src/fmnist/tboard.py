"""TensorBoard logging of a run (``--tensorboard``): event files in ``RUN_DIR/tensorboard/``.

Per epoch: training and validation loss and accuracy, the learning rate and the seconds
the epoch took. At the end: the config's settings as hparams with the test metrics, and
the test set's confusion matrix and most confident mistakes as images. Through PyTorch's
``SummaryWriter`` (the ``tensorboard`` package: ``pip install "fmnist[tensorboard]"``);
view with ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .errors import ConfigError

DIR = "tensorboard"
INSTALL = 'pip install "fmnist[tensorboard]"'
SCALARS = {  # history column -> TensorBoard tag
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/validation",
    "lr": "learning_rate",
    "seconds": "seconds_per_epoch",
}


def require() -> None:
    """Fail before any work when the tensorboard package is missing, with the fix."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"--tensorboard needs the tensorboard package, which is not installed ({e}); "
            f"install it with: {INSTALL}"
        ) from None


def open_writer(run_dir: Path) -> Any:
    """A SummaryWriter on ``run_dir/tensorboard``, checked to be writable first."""
    require()
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(run_dir) / DIR
    try:
        folder.mkdir(exist_ok=True)
        probe = folder / ".writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--tensorboard cannot write {folder} ({e.strerror or e}); make it a writable "
            "directory, give another --out, or train without --tensorboard."
        ) from None
    return SummaryWriter(log_dir=str(folder))


def log_epoch(writer: Any, row: dict[str, float]) -> None:
    """One epoch's history row as scalars at step ``row['epoch']``; flushed for live views."""
    for column, tag in SCALARS.items():
        writer.add_scalar(tag, row[column], row["epoch"])
    writer.flush()


def log_final(writer: Any, cfg: TrainConfig, metrics: dict, test: Any) -> None:
    """The settings and test metrics as hparams, the confusion matrix and the mistakes."""
    from .plots import confusion_matrix_figure, mistakes_figure

    simple = (bool, int, float, str)
    hparams = {k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, simple)}
    scores = {"hparam/test_accuracy": metrics["test_accuracy"],
              "hparam/test_loss": metrics["test_loss"]}  # fmt: skip
    writer.add_hparams(hparams, scores, run_name=".")
    classes = test.metrics["classes"]
    cm = confusion_matrix_figure(np.asarray(test.metrics["confusion_matrix"]), classes)
    writer.add_figure("test/confusion_matrix", cm, close=False)
    if test.images is not None:
        wrong = mistakes_figure(test.images, test.labels, test.probabilities, classes)
        writer.add_figure("test/mistakes", wrong, close=False)
    writer.flush()
