"""The errors fmnist raises for bad input, one class per area; no torch needed.

Every message says what was expected, what was found and how to fix it. The CLI prints an
:class:`FmnistError` as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def not_a_file(path: Path) -> str:
    """What stands at ``path`` instead of a file: 'is a folder' or 'does not exist'."""
    return "is a folder" if path.is_dir() else "does not exist"


class FmnistError(Exception):
    """Base of every error that means bad input or a bad environment, not a bug."""


class ConfigError(FmnistError):
    """A training config, a config file or a combination of flags that cannot be used."""


class DataError(FmnistError):
    """The dataset files cannot be found, downloaded, verified or parsed."""


class ImageError(FmnistError):
    """An input that cannot be turned into a model input; ``code`` names the problem.

    Codes: ``empty``, ``too_large`` (bytes), ``too_many_pixels``, ``not_an_image``,
    ``truncated``, ``zero_size``, ``unreadable_path``, ``bad_array``, ``bad_input``,
    ``no_garment``.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class CheckpointError(FmnistError):
    """A model or training-state file that is missing, foreign, truncated or inconsistent."""


class ModelFileError(FmnistError):
    """A path given as a model that is no model fmnist can load."""


class RunDirError(FmnistError):
    """A run directory that is missing, incomplete, or of the wrong kind for the command."""


class OutputError(FmnistError):
    """An output path that cannot take what the command writes (checked before the work)."""


def _size(n: int) -> str:
    """Bytes for people: 512 bytes, 3.2 kB, 41.0 MB."""
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1e3:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


class DiskFullError(RunDirError):
    """A file not written for want of disk space; its previous version is left intact."""

    def __init__(self, path: object, needed: int, free: int, fix: str) -> None:
        super().__init__(
            f"No space left on the device to write {path} ({_size(needed)}; {_size(free)} free "
            "on its filesystem). Its previous complete version, if any, is untouched: files "
            f"are replaced only once fully written. To go on, {fix}."
        )
        self.path, self.needed, self.free = path, needed, free

    def with_fix(self, fix: str) -> DiskFullError:
        """The same error with another way forward."""
        return DiskFullError(self.path, self.needed, self.free, fix)


class ExportError(FmnistError):
    """An ONNX export that cannot be written or that disagrees with PyTorch."""


class EnsembleError(FmnistError):
    """Runs that cannot be ensembled together."""


class StudyError(FmnistError):
    """An Optuna study that cannot be opened, or whose settings conflict with the flags."""


class TrainingDiverged(FmnistError):
    """The training loss stopped being a number: the recipe diverged."""

    def __init__(self, epoch: int, loss: float, lr: float) -> None:
        super().__init__(
            f"The loss became {loss} in epoch {epoch} with --lr {lr:g}: "
            f"training diverged, and nothing of epoch {epoch} was saved. Train again in a new "
            f"directory with a lower --lr (say {lr / 10:g})."
        )
        self.epoch, self.loss, self.lr = epoch, loss, lr

    @classmethod
    def check(cls, epoch: int, scores: list[float], lr: float) -> tuple[float, float]:
        """An epoch's (mean loss, accuracy), training or validation, refused unless the loss
        is a finite number: NaN weights would follow, and they are never saved."""
        if not math.isfinite(scores[0]):
            raise cls(epoch, scores[0], lr)
        return scores[0], scores[1]

    @classmethod
    def check_row(cls, row: dict[str, Any], lr: float) -> None:
        """An epoch's history row, refused unless its validation loss is a finite number."""
        cls.check(row["epoch"], [row["val_loss"], row["val_accuracy"]], lr)


class TrainingInterrupted(Exception):
    """Ctrl-C stopped training; the last complete epoch is saved and can be resumed."""

    def __init__(self, run_dir: object, epochs_done: int) -> None:
        super().__init__(
            f"Interrupted; {epochs_done} complete epoch(s) are saved in {run_dir}. "
            f"Resume with: fmnist train --resume {run_dir}"
            if epochs_done
            else "Interrupted in the first epoch; nothing was saved. Run the same command again."
        )
        self.run_dir, self.epochs_done = run_dir, epochs_done
