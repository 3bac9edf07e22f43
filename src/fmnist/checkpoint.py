"""Model files that describe themselves: weights in safetensors, metadata in JSON.

A model is two files side by side, ``model.safetensors`` and ``model.json``. The JSON
holds everything needed to rebuild and use the model (registry name and arguments, class
names, normalisation, config, metrics, library versions). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ConfigError
from .rundir import META, WEIGHTS, atomic_write_bytes, atomic_write_json

FORMAT = "fmnist-model"
FORMAT_VERSION = 1
DAMAGED = "the file was damaged or edited by hand; retrain, or copy the model again"


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
    elif p.suffix == ".onnx":  # predict and serve take it; evaluate, export... do not
        raise CheckpointError(
            f"{p} is an ONNX model, which this command does not take (predict and serve "
            "do). Give the run directory or the model.safetensors it was exported from."
        )
    else:
        raise CheckpointError(
            f"{p} is not a model: expected a run directory, a .safetensors file with its "
            ".json beside it, or (where supported) an .onnx file."
        )
    if p.suffix == ".json" and not weights.is_file() and (p.parent / WEIGHTS).is_file():
        raise CheckpointError(  # a run's config.json or metrics.json
            f"{p} is not a model's description; give the run directory {p.parent} (or its "
            f"{WEIGHTS})."
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
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}): {DAMAGED}.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f'{meta_path} is not an fmnist model description (expected "format": "{FORMAT}").'
        )
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path} has format_version {version!r}; this fmnist reads "
            f"versions up to {FORMAT_VERSION}. Upgrade fmnist, or use the model it came from."
        )
    for key in ("model", "model_args", "classes", "normalization"):
        if key not in meta:
            raise CheckpointError(f"{meta_path} lacks the field {key!r}: {DAMAGED}.")
    for key, expected, found in _meta_problems(meta):
        raise CheckpointError(
            f"{meta_path}: {key!r} must be {expected}, found {found!r}: {DAMAGED}."
        )
    return meta


def _finite(x: Any, low: float = -math.inf) -> bool:
    """A real number (not a bool) that is finite and above ``low``."""
    return isinstance(x, int | float) and not isinstance(x, bool) and low < x < math.inf


def _meta_problems(meta: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(field, what it must be, what it is) for each field of model.json that is wrong."""
    args, norm, classes = meta["model_args"], meta["normalization"], meta["classes"]
    width = args.get("num_classes", 10) if isinstance(args, dict) else 10
    checks = [
        ("model", "a model name", meta["model"], isinstance(meta["model"], str)),
        ("model_args", "an object of constructor arguments", args, isinstance(args, dict)),
        ("classes", f"a list of {width} class names", classes, isinstance(classes, list)
         and len(classes) == width and all(isinstance(c, str) for c in classes)),
        ("normalization", "an object with finite numbers mean, std > 0 (and temperature > 0)",
         norm, isinstance(norm, dict) and _finite(norm.get("mean")) and _finite(norm.get("std"), 0)
         and _finite(norm.get("temperature", 1.0), 0)),
        ("tta", "true or false", meta.get("tta"), isinstance(meta.get("tta", False), bool)),
    ]  # fmt: skip
    return [(key, expected, found) for key, expected, found, ok in checks if not ok]


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
    except ConfigError as e:
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
            + ". The weights and model.json come from different models: keep the two files "
            "of one run together, or retrain."
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise CheckpointError(
            f"{weights} holds weights that are not numbers (NaN or infinite) in {broken[:5]}: "
            "the training that wrote them diverged. Retrain (with a lower --lr) or use another "
            "run's model."
        )
    model.load_state_dict(state)
    return model.to(device).eval(), meta


# ---------------------------------------------------------------- training state

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
    atomic_write_bytes(path, data)


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
    except OSError as e:  # SafetensorError is no OSError: permissions, a failing disk
        raise CheckpointError(f"Cannot read {path}: {e.strerror or e}.") from None
    except (SafetensorError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path} is not a readable fmnist training state ({e}): it was damaged after it "
            "was written, so the run cannot be resumed. Train it anew: `fmnist train --config "
            f"{path.parent / 'config.json'} --out NEW_DIR`."
        ) from None
    return tensors, info


def pack_state(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    ema: torch.nn.Module | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything needed to continue training, as (tensors, JSON-able info)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    info: dict[str, Any] = {"optimizer_scalars": {}}
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{pid}.{name}"] = v
            else:
                info["optimizer_scalars"].setdefault(str(pid), {})[name] = v
    info["optimizer_groups"] = osd["param_groups"]
    info["scheduler"] = sched.state_dict()
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    np_state = np.random.get_state()
    info["rng_python"] = random.getstate()
    info["rng_numpy"] = [np_state[0], np_state[1].tolist(), *np_state[2:]]
    return tensors, info


def unpack_state(
    tensors: dict[str, torch.Tensor],
    info: dict[str, Any],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    ema: torch.nn.Module | None,
) -> None:
    """Restore what :func:`pack_state` saved into freshly built objects, or say that the
    state no longer fits them (config.json edited after the run began)."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(part("model."))
        state: dict[int, dict[str, Any]] = {}
        params = [p for group in opt.param_groups for p in group["params"]]  # state_dict order
        for key, v in part("optimizer.").items():
            pid, name = key.split(".", 1)
            p = params[int(pid)]
            if v.shape == p.shape:  # moments in the parameter's memory format (channels_last):
                v = torch.empty_like(p).copy_(v)  # fused kernels walk the raw memory
            state.setdefault(int(pid), {})[name] = v
        for pid, scalars in info["optimizer_scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        opt.load_state_dict({"state": state, "param_groups": info["optimizer_groups"]})
        sched.load_state_dict(info["scheduler"])
        if ema is not None:
            ema.load_state_dict(part("ema."))
        torch.set_rng_state(tensors["rng.torch"])
        random.setstate(
            (info["rng_python"][0], tuple(info["rng_python"][1]), info["rng_python"][2])
        )
        np_state = info["rng_numpy"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        first = (str(e).strip().splitlines() or [repr(e)])[-1].strip()
        raise CheckpointError(
            f"The saved training state does not fit the model and recipe that config.json "
            f"describes ({first}); config.json was changed after the run began. Put it back, "
            "or train a new run with the changed config (`fmnist train --config FILE --out "
            "NEW_DIR`)."
        ) from None
