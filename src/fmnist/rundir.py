"""The run directory: its file names, its kinds, and reading and writing its files.

A run directory is what `fmnist train` (kind ``run``) or `fmnist ensemble` (kind
``ensemble``) writes. Every file is written atomically (temporary file, fsync, rename),
so a reader sees either the old complete file or the new one. No torch here.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DiskFullError, OutputError, RunDirError

CONFIG = "config.json"  # the training config (an ensemble's: its members)
METRICS = "metrics.json"  # the test metrics and provenance, written when training ends
HISTORY = "history.csv"  # the per-epoch curves (empty for an ensemble)
WEIGHTS = "model.safetensors"  # the weights, written after the first epoch
META = "model.json"  # the model description, written with the weights
STATE = "checkpoint.safetensors"  # the resumable training state, rewritten every epoch
EVALUATION = "evaluation.json"  # the report's test-set scores
ONNX = "model.onnx"  # `fmnist export`'s default output
REPORT_MD = "report.md"  # the report as Markdown, linking the figures beside it
REPORT_HTML = "report.html"  # the same report as one standalone page, figures embedded
MODEL_CARD = "README.md"  # the model card (Hugging Face convention), written with the report
LATEST = "latest"  # the symlink to the newest run under a runs root
LOCK = ".lock"  # held (flock) by the one process writing the run; removed when it ends
DISK_FULL_FIX = "free some space and run the command again"

FILES = {  # what a finished run holds, and what each file is for
    CONFIG: "the training config",
    METRICS: "the test metrics, written when training ends",
    HISTORY: "the per-epoch curves",
    WEIGHTS: "the weights, written after the first epoch",
    META: "the model description, written with the weights",
}
RECORDED = {"test_accuracy": (int, float), "train_seconds": (int, float), "params": int,
            "epochs": int}  # fmt: skip  # in every metrics.json, a run's or an ensemble's
HISTORY_FIELDS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
    "elapsed_seconds",
)  # fmt: skip


def output_file(
    path: str | os.PathLike, suffixes: tuple[str, ...] = (), probe: bool = True
) -> Path:
    """``path`` as a file that can be written (ending in one of ``suffixes``, if given), or
    an :class:`OutputError` saying what is wrong, before any work is done. ``probe`` False
    skips the test file that checks the folder is writable (for a write about to happen)."""
    example = f"name{suffixes[0] if suffixes else '.png'}"
    if os.fspath(path) == "":
        raise OutputError(f"The output path is empty; expected a file name such as {example}.")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; expected a file name such as {path / example}.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(
            f"{path}: expected a file ending in {' or '.join(suffixes)}, found "
            f"{path.suffix or 'no suffix'}; e.g. {path.with_suffix(suffixes[0])}."
        )
    if writable_folder(path, path.parent, probe) != path.parent:
        raise OutputError(
            f"Cannot write {path}: the folder {path.parent} does not exist. Create it first "
            "(`mkdir -p`) or give a path in an existing folder."
        )
    return path


def writable_folder(path: Path, start: Path | None = None, probe: bool = True) -> Path:
    """The nearest folder at or above ``start`` (default ``path``) that exists, checked
    writable by a probe file, or an OutputError about writing ``path`` naming what is in the
    way."""
    folder = path if start is None else start
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(
            f"Cannot write {path}: {folder} is a file, not a folder. Give another path, or "
            "remove that file."
        )
    try:  # writable? (permissions, a read-only or special filesystem): a probe says
        if probe:
            tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise OutputError(
            f"Cannot write {path}: {e.strerror} in {folder}. Give a path in a folder you can "
            "write to."
        ) from None
    return folder


def output_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) for output, or say why it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"{path} is a file; expected a folder to write into. Give another "
            "path, or remove the file."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"Cannot create the folder {path}: {e.strerror}. Give a folder you can write to."
        ) from None
    return path


def require_no_run(path: Path) -> None:
    """Refuse to start a new run in ``path`` when it holds a run (finished or not) or files."""
    held = [f for f in (CONFIG, WEIGHTS, STATE, METRICS) if (path / f).exists()]
    if held:
        raise RunDirError(
            f"{path} already holds a run ({', '.join(held)}); a new one there would replace "
            f"it and mix the two. {_way_on(path)}"
        )
    others = held_files(path, but=(LOCK,))
    if others:
        raise RunDirError(
            f"{path} already holds files ({others}), which a run's files ({MODEL_CARD}, "
            f"{REPORT_HTML}, ...) could replace. Give a new or empty folder as --out."
        )


def held_files(path: Path, but: tuple[str, ...] = ()) -> str:
    """The names in the folder ``path`` but ``but``, as "a, b, c, ..." (three at most); ""
    when there are none or ``path`` is no folder."""
    names = sorted(p.name for p in path.iterdir() if p.name not in but) if path.is_dir() else []
    return ", ".join(names[:3]) + ", ..." * (len(names) > 3)


def _way_on(path: Path) -> str:
    """What to do with a run directory: finished, interrupted, not whole, or no run."""
    if all((path / f).is_file() for f in FILES):
        return f"Give a new --out, or remove {path} first."
    has = {name: (path / name).is_file() for name in (CONFIG, WEIGHTS, META, STATE, METRICS)}
    if has[STATE] and has[CONFIG] and not has[METRICS]:
        return f"Its training was interrupted; finish it with `fmnist train --resume {path}`."
    if has[CONFIG] and "members" in read_json(path / CONFIG):
        return ("It is an ensemble that is not whole: make it again with `fmnist ensemble "
                f"RUN... --out NEW_DIR` (its members are in {path / CONFIG}).")  # fmt: skip
    if has[CONFIG]:
        return (f"It is not whole: train it again elsewhere with `fmnist train --config "
                f"{path / CONFIG} --out NEW_DIR`, or remove {path} first.")  # fmt: skip
    if has[WEIGHTS] and has[META]:
        return ("It holds a model, not a run (predict, serve and export take it as it is); "
                "give another directory.")  # fmt: skip
    if any(has.values()):
        return f"It is not whole: remove {path}, or give another directory."
    return f"Train a run there with `fmnist train --out {path}`."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    A full disk (or quota) leaves the old file as it was and raises :class:`DiskFullError`;
    a path that cannot take a file raises :class:`OutputError`.
    """
    path = output_file(path, probe=False)  # mkstemp below is the probe: its OSError is said
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a run's files are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(path, len(data), free, DISK_FULL_FIX) from None
        if isinstance(e, OSError):  # a read-only or special filesystem, no permission...
            raise OutputError(
                f"Cannot write {path}: {e.strerror}. Give a path in a folder you can write to."
            ) from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a clear error naming the damaged file."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(
            f"{path} is not valid JSON ({e}); the run directory is damaged: train it again."
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    return data


@dataclass(frozen=True)
class Run:
    """One run directory; ``Run(path)`` reads nothing until asked."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def create(cls, name: str, runs_root: str | os.PathLike = "runs") -> Run:
        """Create ``<runs_root>/<YYYYmmdd-HHMMSS>-<name>`` (suffixed if it exists)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            d = Path(runs_root) / (f"{stamp}-{name}" + (f"-{i}" if i else ""))
            try:
                d.mkdir(parents=True)
                return cls(d)
            except FileExistsError:
                continue
        raise RunDirError(f"Could not create a new run directory under {runs_root}.")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def kind(self) -> str:
        """``ensemble`` for what `fmnist ensemble` wrote, else ``run``."""
        return "ensemble" if "members" in self.config() else "run"

    @property
    def finished(self) -> bool:
        """True once training has ended (metrics.json is written last)."""
        return (self.path / METRICS).is_file()

    def config(self) -> dict[str, Any]:
        """The saved config.json."""
        return read_json(self.path / CONFIG)

    def metrics(self) -> dict[str, Any]:
        """The saved metrics.json, refused unless it holds the numbers every run records."""
        data = read_json(self.path / METRICS)
        wrong = {k: data.get(k) for k, kind in RECORDED.items()
                 if not isinstance(data.get(k), kind) or isinstance(data.get(k), bool)}  # fmt: skip
        if wrong:
            found = ", ".join(f"{k} {json.dumps(v)}" for k, v in wrong.items())
            raise RunDirError(
                f"{self.path / METRICS} is damaged: test_accuracy and train_seconds must be "
                f"numbers, params and epochs integers; found {found}. Train the run again."
            )
        return data

    def history(self) -> list[dict[str, float]]:
        """The per-epoch rows of history.csv, values as floats (a damaged file: RunDirError)."""
        with open(self.path / HISTORY, newline="") as f:
            reader = csv.DictReader(f)
            try:
                rows = [{k: float(v) for k, v in row.items()} for row in reader]
            except (TypeError, ValueError, csv.Error) as e:  # a short or long row, a word
                rows, problem = [], f"line {reader.line_num}: {e}"
            else:
                missing = set(HISTORY_FIELDS) - set(reader.fieldnames or ())
                problem = missing and f"no column {', '.join(sorted(missing))}"
        if problem:
            raise RunDirError(
                f"{self.path / HISTORY} is damaged ({problem}); it must have the columns "
                f"{', '.join(HISTORY_FIELDS)}, one row of numbers per epoch. Train the run again."
            )
        return rows

    def write_config(self, config: dict[str, Any]) -> None:
        """Write config.json."""
        atomic_write_json(self.path / CONFIG, config)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json (the mark of a finished run)."""
        atomic_write_json(self.path / METRICS, metrics)

    def write_history(self, rows: list[dict]) -> None:
        """Write the per-epoch rows to history.csv, atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path / HISTORY, buf.getvalue().encode())

    def point_latest(self) -> None:
        """Atomically point ``<runs_root>/latest`` at this run (a relative symlink)."""
        link = self.path.parent / LATEST
        tmp = self.path.parent / f".{LATEST}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.path.name)
        os.replace(tmp, link)

    def require_finished(self) -> Run:
        """This run if it is a finished run; else an error saying what is missing and why."""
        if not self.path.is_dir():
            raise RunDirError(
                f"{self.path} is not a directory. Expected a run directory written by "
                f"`fmnist train` (e.g. runs/latest); make one with `fmnist train --out "
                f"{self.path}`."
            )
        missing = [name for name in FILES if not (self.path / name).is_file()]
        if not missing:
            return self
        what = "; ".join(f"{name} ({FILES[name]})" for name in missing)
        raise RunDirError(
            f"{self.path} is not a finished run: missing {what}. {_way_on(self.path)}"
        )

    def require_resumable(self) -> Run:
        """This run if `fmnist train --resume` can continue it; else why not."""
        if not (self.path / CONFIG).is_file():
            raise RunDirError(
                f"{self.path} is not a run directory (no {CONFIG}); resume takes the "
                "directory that `fmnist train` printed."
            )
        if self.kind == "ensemble":
            raise RunDirError(
                f"{self.path} is an ensemble of finished runs (`fmnist ensemble`): it trains "
                "nothing, so there is nothing to resume. Resume an unfinished member run "
                "instead."
            )
        if self.finished:
            raise RunDirError(
                f"{self.path} is already complete (it has {METRICS}); nothing to resume."
            )
        return self


def provenance(device: str = "cpu", command: str | None = None) -> dict[str, Any]:
    """Where and how a result was made: hardware, versions, commit and command."""
    from .system import git_commit, hardware, versions

    return {
        "hardware": hardware(device),
        "versions": versions(),
        "commit": git_commit(),
        "command": command,
    }
