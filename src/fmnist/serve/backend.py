"""What `fmnist serve` runs a model with: ONNX Runtime whenever it can, else PyTorch, saying why.

A run directory (or a model.safetensors, a bundled model's name, or nothing: the bundled
model) is served through ONNX Runtime, 1.2-2x faster per image than PyTorch on a CPU and
without torch in the workers. The ONNX model is, in order: the checkpoint's own
``model.onnx`` when it is current (not older than the weights and model.json, and made for
the same model and classes); else an export cached under ``~/.cache/fmnist/onnx`` by the
SHA-256 of the weights and model.json; else a fresh export into that cache, written only
after `fmnist export`'s parity check on the test set. PyTorch serves only when none of this
can be had (no ``export`` extra, no test set for the check, a failed check), and the
reason is logged. No torch is imported here unless an export is needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..bundled import resolve, root
from ..errors import CheckpointError, ConfigError, FmnistError
from ..predict import Classifier
from ..rundir import META, ONNX, WEIGHTS, read_json

BACKENDS = ("auto", "onnx", "torch")
log = logging.getLogger("fmnist.serve")


@dataclass(frozen=True)
class Served:
    """What every server worker loads: a model file, its backend and why it was chosen."""

    path: Path  # an .onnx file, or the checkpoint (run directory or .safetensors)
    backend: str  # "onnx" or "torch"
    reason: str  # one line for the log: where the ONNX model came from, or why PyTorch
    # The checkpoint's unsure threshold, or one per class (model.json "min_confidence"),
    # its photo offsets ("photo_offsets") and shift setting ("photo_shifts"): fitted
    # together, so served together even when an older ONNX file is what runs.
    min_confidence: float | list[float] | None = None
    photo_offsets: float | list[float] | None = None
    photo_shifts: bool | None = None

    def load(self) -> Classifier:
        """The Classifier a worker serves with (one intra-op thread: a worker per core)."""
        return Classifier.load(
            self.path,
            threads=1,
            min_confidence=self.min_confidence,
            photo_offsets=self.photo_offsets,
            photo_shifts=self.photo_shifts,
        )


def default_workers() -> int:
    """One worker per core this process may run on (Linux: its CPU affinity); 1 on Windows."""
    if sys.platform == "win32":
        return 1  # gunicorn does not run there
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def onnx_cache_dir() -> Path:
    """Where on-the-fly exports are kept: $XDG_CACHE_HOME/fmnist/onnx (~/.cache/...)."""
    from ..sources import cache_dir

    return cache_dir() / "onnx"


def _checkpoint_files(p: Path) -> tuple[Path, Path]:
    """(weights, model.json) of a run directory, bundled folder or .safetensors file."""
    if p.is_dir():
        return p / WEIGHTS, p / META
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix(".safetensors"), p.with_suffix(".json")
    if not p.exists():
        raise ConfigError(
            f"{p} does not exist. Give a run directory (e.g. runs/latest), a "
            "model.safetensors, a model.onnx or a bundled model's name (`fmnist models`)."
        )
    raise ConfigError(
        f"{p} is not a model: expected a run directory, a model.safetensors with its "
        "model.json beside it, or an .onnx file."
    )


def onnx_is_current(onnx_file: Path, weights: Path, meta: dict, meta_file: Path) -> str | None:
    """None if ``onnx_file`` was exported from these weights, else why it is not."""
    if not onnx_file.is_file():
        return f"there is no {onnx_file.name} beside the weights"
    newest = max(weights.stat().st_mtime, meta_file.stat().st_mtime)
    # A bundled model's three files are made together (tools/bundle.py) and tested to agree;
    # their times are whatever git or pip gave them.
    shipped = onnx_file.resolve().parent.parent == root().resolve()
    if not shipped and onnx_file.stat().st_mtime < newest:
        return f"{onnx_file} is older than the weights (re-export with `fmnist export`)"
    try:
        from ..predict import onnx_session

        props = onnx_session(onnx_file).get_modelmeta().custom_metadata_map
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf types
        return f"{onnx_file} cannot be loaded by ONNX Runtime ({e})"
    found = (json.loads(props.get("classes", "null")), props.get("model"), props.get("tta"))
    wanted = (list(meta["classes"]), meta["model"], "true" if meta.get("tta") else "false")
    if found != wanted:
        return f"{onnx_file} was exported from another model (classes, name or TTA differ)"
    return None


def _digest(weights: Path, meta_file: Path) -> str:
    """SHA-256 of the weights and model.json: the name of their cached export."""
    h = hashlib.sha256()
    for f in (weights, meta_file):
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def _export_cached(p: Path, weights: Path, meta_file: Path, data_dir: str | None) -> Path:
    """The cached, parity-checked ONNX export of checkpoint ``p``; exports it if missing."""
    out = onnx_cache_dir() / f"{_digest(weights, meta_file)}.onnx"
    if out.is_file():  # written only after its parity check passed
        return out
    from ..export import export  # needs torch and the `export` extra

    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX once, checked on the test set: %s", p, out)
    report = export(p, out, data_dir=data_dir)
    log.info(
        "exported in %.1f s; largest probability difference %.1e on %d test images",
        report.seconds,
        report.max_prob_diff,
        report.images,
    )
    return out


def choose(
    model: str | os.PathLike | None, backend: str = "auto", data_dir: str | None = None
) -> Served:
    """The fastest backend for ``model`` (see the module doc); ``backend`` forces one."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    p = resolve(model)
    if p.suffix == ".onnx":
        if backend == "torch":
            raise ConfigError(
                f"--backend torch needs a checkpoint, got the ONNX file {p}; give the run "
                "directory or its model.safetensors instead."
            )
        return Served(p, "onnx", f"the ONNX file {p}")
    weights, meta_file = _checkpoint_files(p)
    if not meta_file.is_file() or not weights.is_file():
        missing = meta_file if not meta_file.is_file() else weights
        raise ConfigError(
            f"Missing {missing}: {p} is not a complete checkpoint; train one with "
            "`fmnist train`, or give a model.onnx."
        )
    meta = read_json(meta_file)
    rule = meta.get("min_confidence"), meta.get("photo_offsets"), meta.get("photo_shifts")
    if backend == "torch":
        return Served(p, "torch", "PyTorch, as asked (--backend torch)", *rule)
    own = weights.with_name(ONNX)
    stale = onnx_is_current(own, weights, meta, meta_file)
    if stale is None:
        return Served(own, "onnx", f"ONNX Runtime on the checkpoint's own {own}", *rule)
    if importlib.util.find_spec("torch") is None and own.is_file():
        why = f"{stale}, but PyTorch is not installed to export it again"
        return Served(own, "onnx", f"ONNX Runtime on {own}: {why}", *rule)
    try:
        cached = _export_cached(p, weights, meta_file, data_dir)
    except CheckpointError:
        raise  # the checkpoint itself is damaged: PyTorch cannot serve it either
    except (ImportError, OSError, FmnistError) as e:
        why = f"no ONNX model could be had ({stale}; exporting failed: {e})"
        if backend == "onnx":
            raise ConfigError(f"--backend onnx: {why}") from None
        fix = 'pip install "fmnist[export]"' if isinstance(e, ImportError) else "fmnist export"
        return Served(p, "torch", f"PyTorch, slower: {why}; `{fix}` fixes this", *rule)
    why = f"ONNX Runtime on an export of {p} ({stale}): {cached}"
    return Served(cached, "onnx", why, *rule)
