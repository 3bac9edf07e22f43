"""Model files that describe themselves: weights in safetensors, metadata in JSON.

A model is two files side by side, ``model.safetensors`` and ``model.json``. The JSON
holds everything needed to rebuild and use the model (registry name and arguments, class
names, normalisation, config, metrics, library versions). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

FORMAT = "fmnist-model"
FORMAT_VERSION = 1
WEIGHTS, META = "model.safetensors", "model.json"


class CheckpointError(RuntimeError):
    """A model file is missing, corrupt or does not match its description."""


def atomic_write_bytes(path: Path, data: bytes, *, pause: float = 0.0) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    ``pause`` (seconds) is a test hook: it sleeps with half of the data written, so a test
    can kill the process while the temporary file is torn.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            if pause:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(pause)
                data = data[len(data) // 2 :]
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def resolve(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return (weights, metadata) paths for a run directory, a .safetensors or a .json."""
    p = Path(path)
    if p.is_dir():
        weights, meta = p / WEIGHTS, p / META
    elif p.suffix == ".safetensors":
        weights, meta = p, p.with_suffix(".json")
    elif p.suffix == ".json":
        weights, meta = p.with_suffix(".safetensors"), p
    elif not p.exists():
        raise CheckpointError(
            f"{p} does not exist. Expected a run directory (e.g. runs/latest) or a "
            "model.safetensors file; train one with `fmnist train`."
        )
    else:
        raise CheckpointError(
            f"{p} is not a model: expected a run directory, a .safetensors file with its "
            ".json beside it, or (where supported) an .onnx file."
        )
    for f, what in ((weights, "weights"), (meta, "metadata")):
        if not f.is_file():
            raise CheckpointError(
                f"Missing model {what} {f}. A run directory gets {WEIGHTS} and {META} "
                "when `fmnist train` finishes its first epoch; train with `fmnist train`."
            )
    return weights, meta


def save_model(directory: Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Save ``model``'s state and ``meta`` into ``directory``; return the weights path."""
    from safetensors.torch import save

    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS, save(state))
    atomic_write_json(
        directory / META, {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    )
    return directory / WEIGHTS


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the metadata of a model."""
    _, meta_path = resolve(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f'{meta_path} is not an fmnist model description (expected "format": "{FORMAT}").'
        )
    for key in ("model", "model_args", "classes", "normalization"):
        if key not in meta:
            raise CheckpointError(f"{meta_path} lacks the field {key!r}.")
    return meta


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from its files; returns (model in eval mode, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import Normalized, create_model

    weights, _ = resolve(path)
    meta = read_meta(path)
    try:
        net = create_model(meta["model"], **meta["model_args"])
    except ValueError as e:
        raise CheckpointError(f"{weights}: {e}") from None
    model = Normalized.from_meta(net, meta["normalization"])
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({e}). The file is corrupt or "
            "truncated: retrain, or copy it again from its source."
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if expected[k].shape != state[k].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights} does not match model {meta['model']!r} {meta['model_args']}: "
            + "; ".join(
                x
                for x in (
                    missing and f"missing tensors {missing[:5]}",
                    unexpected and f"unexpected tensors {unexpected[:5]}",
                    wrong and f"wrong shapes {wrong[:5]}",
                )
                if x
            )
        )
    model.load_state_dict(state)
    return model.to(device).eval(), meta


# ---------------------------------------------------------------- training state

STATE = "checkpoint.safetensors"  # the resumable training state, rewritten every epoch
_STATE_KEY = "fmnist_training_state"


def save_state(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write tensors and JSON ``info`` as ONE safetensors file, atomically.

    One file, so a kill at any moment leaves either the previous state or the new one:
    the JSON part travels in the safetensors header's metadata.
    """
    from safetensors.torch import save

    data = save(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        metadata={_STATE_KEY: json.dumps(info)},
    )
    # Test hook "EPOCH:SECONDS": pause halfway through writing that epoch's state.
    hook = os.environ.get("FMNIST_TEST_PAUSE_IN_STATE_WRITE", "")
    epoch, _, seconds = hook.partition(":")
    pause = float(seconds) if hook and int(epoch) == info.get("epoch") else 0.0
    atomic_write_bytes(path, data, pause=pause)


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a training state written by :func:`save_state`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})[_STATE_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except FileNotFoundError:
        raise CheckpointError(
            f"No training state {path}: the run did not finish its first epoch; start it "
            "again with `fmnist train`."
        ) from None
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable fmnist training state ({e}).") from None
    return tensors, info
