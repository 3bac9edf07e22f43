"""Training: one config dataclass, named presets, and the loop in plain sight.

``train(cfg)`` loads the data once as uint8 tensors on the device, carves a seeded
validation split from the training set, trains epoch by epoch (batch, augment, forward,
loss, backward, step), validates after every epoch, keeps the weights of the best
validation epoch, evaluates the test set once at the end, and writes a run directory.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import augment
from .checkpoint import STATE, atomic_write_json, load_state, save_model, save_state
from .data import CLASSES, MEAN, STD, load_data, split_indices
from .evaluate import fit_temperature, loss_accuracy, predict_logits
from .models import Normalized, count_params, create_model, to_input
from .system import git_commit, hardware, keep_freed_memory, versions


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run directory."""

    preset: str = "seed"  # name of the preset this config started from
    model: str = "seed"  # registry name, see `fmnist models`
    model_args: dict[str, Any] = field(default_factory=dict)  # constructor arguments
    epochs: int = 10  # passes over the training split
    batch_size: int = 32  # images per optimisation step (per process under torchrun)
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # adam | adamw | sgd (SGD uses Nesterov momentum)
    momentum: float = 0.9  # SGD momentum (ignored by Adam/AdamW)
    weight_decay: float = 0.0  # L2 (adam, sgd) or decoupled (adamw) weight decay
    schedule: str = "constant"  # constant | onecycle | cosine (per step)
    warmup: float = 0.0  # fraction of all steps spent warming up (cosine, onecycle)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    normalize: bool = False  # standardise pixels with the training mean/std (else [0, 1])
    flip: float = 0.0  # probability of a horizontal flip per image
    translate: int = 0  # maximum random shift in pixels (pad and crop)
    erase: float = 0.0  # probability of random erasing per image
    ema: float = 0.0  # decay of the exponential moving average of weights (0 = off)
    tta: bool = False  # evaluate with flip test-time augmentation
    calibrate: bool = False  # fit a temperature on the validation split (probabilities only)
    scale_lr: str = "none"  # none | linear: multiply lr by the number of torchrun processes
    sync_bn: bool = False  # torchrun on GPUs: batch-norm statistics over all processes' shards
    val_split: float = 0.2  # fraction of the 60,000 training images held out
    limit_train: int | None = None  # use only the first N training images (quick runs)
    seed: int = 0  # seeds the split, the initialisation, shuffling and augmentation
    eval_batch_size: int = 256  # images per batch when evaluating (256: fastest on CPUs)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # torch intra-op threads (0 = torch's default)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1", self.epochs),
            (self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size),
            (0 < self.val_split < 1, "val_split", "a fraction in (0, 1)", self.val_split),
            (self.lr > 0, "lr", "a positive number", self.lr),
            (self.optimizer in OPTIMIZERS, "optimizer", " | ".join(OPTIMIZERS), self.optimizer),
            (self.schedule in SCHEDULES, "schedule", " | ".join(SCHEDULES), self.schedule),
            (0 <= self.warmup < 1, "warmup", "a fraction in [0, 1)", self.warmup),
            (0 <= self.ema < 1, "ema", "a decay in [0, 1)", self.ema),
            (self.scale_lr in ("none", "linear"), "scale_lr", "none | linear", self.scale_lr),
            (
                self.limit_train is None or self.limit_train >= 2,
                "limit_train",
                "an integer >= 2 or None",
                self.limit_train,
            ),
        ]
        for ok, name, expected, found in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {expected}, got {found!r}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. a saved config.json), refusing unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**d)


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")

PRESETS: dict[str, TrainConfig] = {
    # The notebook's recipe exactly: Adam 1e-3, batch 32, 10 epochs, split 0.2, [0, 1] input.
    "seed": TrainConfig(preset="seed"),
    # What `fmnist train` and `make demo` run: 93 % in under 3 minutes on 2 CPU cores. Short
    # training favours light augmentation: shifts of 1 pixel beat 2 on the validation split.
    "default": TrainConfig(
        preset="default", model="fast", epochs=8, batch_size=128, optimizer="adamw", lr=4e-3,
        weight_decay=0.05, schedule="onecycle", warmup=0.2, label_smoothing=0.1,
        normalize=True, flip=0.5, translate=1, tta=True, calibrate=True, val_split=0.1,
    ),
    # The strongest single model: a ResNet-20 with random erasing. 24 epochs of about 140 s
    # fit in an hour on 2 Zen 3 cores.
    "best": TrainConfig(
        preset="best", model="resnet", epochs=24, batch_size=128, optimizer="sgd", lr=0.1,
        momentum=0.9, weight_decay=5e-4, schedule="onecycle", warmup=0.15,
        label_smoothing=0.1, normalize=True, flip=0.5, translate=2, erase=0.5, ema=0.999,
        tta=True, calibrate=True, val_split=0.1,
    ),
}  # fmt: skip


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """Return a copy of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}.")
    base = dataclasses.asdict(PRESETS[name])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(base)


_JSON_TYPES = {str: "string", int: "number", float: "number", bool: "true/false",
               type(None): "null", list: "array", dict: "object"}  # fmt: skip


def _config_type_errors(d: dict[str, Any]) -> list[str]:
    """Fields of ``d`` whose JSON type does not fit TrainConfig (ints pass for floats)."""
    import types
    import typing

    def fits(value: Any, hint: Any) -> bool:
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            return any(fits(value, h) for h in typing.get_args(hint))
        if typing.get_origin(hint) is dict:
            return isinstance(value, dict) and all(isinstance(k, str) for k in value)
        if hint is float:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return hint is Any or isinstance(value, hint)

    def name(hint: Any) -> str:
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            return " or ".join(name(h) for h in typing.get_args(hint))
        if typing.get_origin(hint) is dict:
            return "an object"
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                type(None): "null"}.get(hint, str(hint))  # fmt: skip

    hints = typing.get_type_hints(TrainConfig)
    return [
        f"{k} must be {name(hints[k])}, found {json.dumps(v)} "
        f"({_JSON_TYPES.get(type(v), type(v).__name__)})"
        for k, v in d.items()
        if k in hints and not fits(v, hints[k])
    ]


def load_config(path: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """Read a TrainConfig from a JSON file such as a run's config.json; apply ``overrides``.

    The file has the format of the config.json in every run directory (and of the
    best_config.json that `fmnist tune` writes). Keys it leaves out come from the preset
    its ``preset`` key names, if that is a known preset, else from TrainConfig's defaults.
    Overrides that are None are ignored (flags not given).
    """
    path = Path(path)
    hint = (
        "Expected a JSON object of TrainConfig fields like a run directory's config.json, "
        "e.g. runs/latest/config.json or the best_config.json written by `fmnist tune`"
    )
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist. {hint}.")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Config file {path} is not valid JSON ({e}). {hint}.") from None
    if not isinstance(d, dict):
        found = _JSON_TYPES.get(type(d), type(d).__name__)
        raise ValueError(f"Config file {path} holds a JSON {found}, not an object. {hint}.")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"Config file {path} has unknown keys {unknown}; valid keys: {sorted(known)}. "
            "Fix the spelling or remove them."
        )
    errors = _config_type_errors(d)
    if errors:
        raise ValueError(
            f"Config file {path} has values of the wrong type: {'; '.join(errors)}. "
            "Fix them in the file."
        )
    floats = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("float", float)}
    d = {k: float(v) if k in floats else v for k, v in d.items()}  # 1 -> 1.0, as runs write
    preset = d.get("preset")
    merged = dataclasses.asdict(PRESETS[preset] if preset in PRESETS else TrainConfig())
    merged.update(d)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.from_dict(merged)
    except ValueError as e:
        raise ValueError(f"Config file {path}: {e} Fix the value in the file.") from None


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def build_model(cfg: TrainConfig) -> Normalized:
    """The registry model of ``cfg`` behind its input normalisation."""
    mean, std = (MEAN, STD) if cfg.normalize else (0.0, 1.0)
    return Normalized(create_model(cfg.model, **cfg.model_args), mean, std)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer named in ``cfg``."""
    params = list(model.parameters())
    # One fused kernel per step instead of a dozen ops per tensor: 1.1-1.3x the seed CNN's
    # training throughput at batch 32 on 2 CPU cores. CPU and CUDA have fused kernels.
    fused = True if params[0].device.type in ("cpu", "cuda") else None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay,
        fused=fused,
    )  # fmt: skip


def make_scheduler(
    cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step learning-rate schedule: constant, one-cycle, or cosine with warm-up."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=max(cfg.warmup, 0.01)
        )
    warm = int(cfg.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def new_run_dir(cfg: TrainConfig | str, runs_root: Path = Path("runs")) -> Path:
    """Create and return ``runs/<YYYYmmdd-HHMMSS>-<preset>`` (suffixed if it exists).

    ``cfg`` may be a name instead of a config, e.g. "ensemble" for `fmnist ensemble`.
    """
    name = cfg if isinstance(cfg, str) else cfg.preset
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = runs_root / (f"{stamp}-{name}" + (f"-{i}" if i else ""))
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not create a new run directory under {runs_root}.")


def point_latest(run_dir: Path) -> None:
    """Atomically point ``<runs_root>/latest`` at ``run_dir`` (a relative symlink)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


HISTORY_FIELDS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
    "elapsed_seconds",
)  # fmt: skip


def write_history(path: Path, history: list[dict]) -> None:
    """Write ``history`` as CSV (atomically)."""
    import io

    from .checkpoint import atomic_write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_history(path: Path) -> list[dict]:
    """Read a history.csv written by :func:`write_history`, values as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


class Progress:
    """Per-epoch progress: a tqdm bar on a terminal, plain lines otherwise, nothing if quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None

    def start(self, epoch: int, epochs: int, steps: int) -> None:
        """Begin an epoch."""
        if not self.quiet and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=True)

    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        """Advance by ``n`` steps, showing the running loss and accuracy when given."""
        if self.bar is not None:
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        """Close the bar of an epoch that will not finish."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def end(self, row: dict, epochs: int) -> None:
        """Finish an epoch with its summary line."""
        line = (
            f"epoch {int(row['epoch'])}/{epochs}: loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val_loss {row['val_loss']:.4f} "
            f"val_acc {row['val_accuracy']:.4f} | {row['seconds']:.1f}s"
        )
        if self.bar is not None:
            self.bar.set_postfix_str(f"val_acc {row['val_accuracy']:.4f}")
            self.bar.close()
            self.bar = None
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) ``t`` across processes, in place."""
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def identical(self, module: torch.nn.Module) -> bool:
        """True when every process holds exactly the same parameters and buffers."""
        if self.world == 1:
            return True
        flat = torch.cat([t.detach().double().flatten() for t in module.state_dict().values()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        torch.distributed.all_gather(gathered, flat)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm statistics)."""
        if self.world > 1:
            for buf in module.buffers():
                torch.distributed.broadcast(buf, 0)


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun job described by the environment, if any; pick the device."""
    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    import torch.distributed as td

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(td.get_rank(), td.get_world_size()), device


def epoch_seed(*key: int) -> int:
    """A well-mixed 63-bit seed from integers such as (seed, epoch, stream, rank).

    Every epoch reseeds shuffling, augmentation and dropout from its number, so a resumed
    run or a run on several processes draws exactly what an uninterrupted one would.
    """
    return int(np.random.SeedSequence(list(key)).generate_state(2, np.uint64)[0] >> 1)


def train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    epoch: int,
    dist: Dist = Dist(),
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    progress: Progress | None = None,
) -> tuple[float, float]:
    """One pass over (x uint8 (N, 28, 28), y int64 (N,)); returns (mean loss, accuracy).

    With several processes, every process draws the same permutation and takes its own
    equal-sized shard; ``model`` is then DistributedDataParallel, which all-reduces the
    gradients in ``backward``.
    """
    model.train()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    dev = x.device
    shuffle = torch.Generator(device=dev).manual_seed(epoch_seed(cfg.seed, epoch, 0))
    aug = torch.Generator(device=dev).manual_seed(epoch_seed(cfg.seed, epoch, 1, dist.rank))
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 2, dist.rank))  # dropout
    perm = torch.randperm(len(x), device=dev, generator=shuffle)
    perm = perm[: len(x) - len(x) % dist.world][dist.rank :: dist.world]  # (N / world,)
    n = len(perm)
    # Loss and correct counts accumulate on the device: no host sync per step.
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    steps = math.ceil(n / cfg.batch_size)
    report_every = max(1, steps // 20)
    for step in range(steps):
        idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        xb = augment.augment_batch(
            x[idx], flip_p=cfg.flip, translate_px=cfg.translate, erase_p=cfg.erase, gen=aug
        )
        xb = to_input(xb).contiguous(memory_format=fmt)  # (B, 1, 28, 28) float in [0, 1]
        yb = y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))
        with torch.no_grad():
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        if progress is not None and (step + 1) % report_every == 0:
            seen = min(n, (step + 1) * cfg.batch_size)
            progress.update(report_every, loss_sum.item() / seen, correct.item() / seen)
    if progress is not None:
        progress.update(steps % report_every)
    totals = dist.sum(torch.stack([loss_sum, correct.to(loss_sum.dtype)]))
    return (totals / (n * dist.world)).tolist()


def validate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, dist: Dist
) -> tuple[float, float]:
    """(loss, accuracy) on (x, y); each process scores its shard and the sums are reduced."""
    xs, ys = x[dist.rank :: dist.world], y[dist.rank :: dist.world]
    logits = predict_logits(
        model, xs, batch_size=cfg.eval_batch_size, tta=cfg.tta, channels_last=cfg.channels_last
    )
    loss, acc = loss_accuracy(logits, ys)
    totals = dist.sum(torch.tensor([loss * len(ys), acc * len(ys)], dtype=torch.float64,
                                   device=x.device))  # fmt: skip
    return (totals / len(y)).tolist()


class TrainingInterrupted(Exception):
    """Ctrl-C stopped training; the last complete epoch is saved and can be resumed."""

    def __init__(self, run_dir: Path, epochs_done: int) -> None:
        super().__init__(
            f"Interrupted; {epochs_done} complete epoch(s) are saved in {run_dir}. "
            f"Resume with: fmnist train --resume {run_dir}"
        )
        self.run_dir, self.epochs_done = run_dir, epochs_done


def pack_state(model, opt, sched, ema) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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


def unpack_state(tensors, info, model, opt, sched, ema) -> None:
    """Restore what :func:`pack_state` saved into freshly built objects."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

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
    random.setstate((info["rng_python"][0], tuple(info["rng_python"][1]), info["rng_python"][2]))
    np_state = info["rng_numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


def train(
    cfg: TrainConfig,
    *,
    out: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = "runs",
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    command: str | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> Path:
    """Train according to ``cfg``, write the run directory, and return its path.

    With ``resume=True``, ``out`` must be an existing run directory: training continues
    from its last complete epoch and ends with the same result as an uninterrupted run.
    Under torchrun, each process trains on its shard and only rank 0 writes files.
    ``on_epoch(row)`` is called after every epoch with its history row (a study uses it to
    prune; an exception raised there stops the run).
    """
    with torch_settings(cfg.threads):
        return _train(cfg, out, runs_root, data_dir, quiet, command, resume, on_epoch)


@contextlib.contextmanager
def torch_settings(threads: int | None) -> Iterator[None]:
    """A run's process-wide torch settings; the caller's come back afterwards."""
    det = torch.utils.deterministic
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             det.fill_uninitialized_memory)  # fmt: skip
    if threads:
        torch.set_num_threads(threads)
    # Same seed, config and machine -> identical runs (on CUDA some kernels still vary).
    torch.use_deterministic_algorithms(True, warn_only=True)
    # ...without filling every new tensor with NaN first (a deterministic-mode default that
    # cost 38 fill_ calls per step, 6 % of the seed CNN's time): no op here reads memory
    # it has not written.
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        if torch.get_num_threads() != saved[0]:
            torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        det.fill_uninitialized_memory = saved[3]


def _train(cfg, out, runs_root, data_dir, quiet, command, resume, on_epoch) -> Path:
    """The run itself, with train()'s arguments; train() holds the torch settings around it."""
    dist, device = init_distributed(cfg.device)
    keep_freed_memory()  # no page faults for every step's activations (glibc)
    torch.manual_seed(cfg.seed)
    (x_all, y_all), (x_test, y_test) = load_data(data_dir)
    if cfg.limit_train:
        x_all, y_all = x_all[: cfg.limit_train], y_all[: cfg.limit_train]
    tr_idx, va_idx = split_indices(len(x_all), cfg.val_split, cfg.seed)
    # The whole dataset lives on the device as uint8 (47 MB); batches are index slices.
    x_tr = torch.from_numpy(x_all[tr_idx]).to(device)  # (N, 28, 28) uint8
    y_tr = torch.from_numpy(y_all[tr_idx]).long().to(device)
    x_va = torch.from_numpy(x_all[va_idx]).to(device)
    y_va = torch.from_numpy(y_all[va_idx]).long().to(device)

    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and dist.world > 1:
        if device.type == "cpu":
            raise ValueError(
                "sync_bn needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU. Drop "
                "sync_bn; each process then normalises with its own shard's statistics."
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.scale_lr == "linear":
        cfg = dataclasses.replace(cfg, lr=cfg.lr * dist.world)
    opt = make_optimizer(cfg, model)
    steps_per_epoch = math.ceil((len(x_tr) // dist.world) / cfg.batch_size)
    sched = make_scheduler(cfg, opt, cfg.epochs * steps_per_epoch)
    ema = None
    if cfg.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema),
            use_buffers=True,
        )  # fmt: skip
    eval_model = ema.module if ema is not None else model

    if resume:
        run_dir = Path(out)
        tensors, info = load_state(run_dir / STATE)
        unpack_state(tensors, info, model, opt, sched, ema)
        history, start = info["history"], info["epoch"] + 1
        best_acc, best_epoch = info["best_val_accuracy"], info["best_epoch"]
        best_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    else:
        if out:
            run_dir = Path(out)
        else:  # only rank 0 names a new directory; the others never write
            run_dir = new_run_dir(cfg, Path(runs_root)) if dist.main else Path(runs_root)
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "config.json", dataclasses.asdict(cfg))
        history, start, best_acc, best_epoch, best_state = [], 1, -1.0, 0, None
    # DistributedDataParallel averages gradients across processes during backward.
    net = model if dist.world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    meta = {
        "model": cfg.model,
        "model_args": cfg.model_args,
        "classes": list(CLASSES),
        "normalization": {
            "mean": float(model.mean),
            "std": float(model.std),
            "input": "float32 pixels in [0, 1], shape (N, 1, 28, 28), garment light on black",
        },
        "tta": cfg.tta,
        "config": dataclasses.asdict(cfg),
        "versions": versions(),
    }

    progress = Progress(quiet or not dist.main)
    elapsed0 = history[-1]["elapsed_seconds"] if history else 0.0
    t0 = time.perf_counter()
    epoch = start - 1
    try:
        for epoch in range(start, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            progress.start(epoch, cfg.epochs, steps_per_epoch)
            lr = opt.param_groups[0]["lr"]
            train_loss, train_acc = train_epoch(
                net, opt, sched, x_tr, y_tr, cfg, epoch, dist, ema, progress
            )
            dist.sync_buffers(eval_model)
            val_loss, val_acc = validate(eval_model, x_va, y_va, cfg, dist)
            now = time.perf_counter()
            row = {
                "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
                "seconds": now - t_epoch, "elapsed_seconds": elapsed0 + now - t0,
            }  # fmt: skip
            history.append(row)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch
                best_state = copy.deepcopy(eval_model.state_dict())
                if dist.main:
                    save_model(run_dir, eval_model, {**meta, "epoch": epoch})
            if dist.main:
                # The resumable state: one file, replaced atomically after every epoch.
                tensors, info = pack_state(model, opt, sched, ema)
                tensors |= {f"best.{k}": v for k, v in best_state.items()}
                info |= {"epoch": epoch, "history": history, "best_val_accuracy": best_acc,
                         "best_epoch": best_epoch}  # fmt: skip
                save_state(run_dir / STATE, tensors, info)
                write_history(run_dir / "history.csv", history)
            progress.end(row, cfg.epochs)
            if on_epoch is not None:
                on_epoch(row)
    except KeyboardInterrupt:
        progress.close()
        raise TrainingInterrupted(run_dir, epoch - 1) from None
    train_seconds = elapsed0 + time.perf_counter() - t0
    identical = dist.identical(model)  # a collective: every process takes part
    if not dist.main:
        torch.distributed.barrier()  # rank 0 scores the test set and writes the results
        return run_dir

    # The test set is touched once, with the best validation epoch's weights.
    eval_model.load_state_dict(best_state)
    if cfg.calibrate:  # label smoothing, for one, leaves the probabilities too low
        val_logits = predict_logits(
            eval_model, x_va, batch_size=cfg.eval_batch_size, tta=cfg.tta,
            channels_last=cfg.channels_last,
        )  # fmt: skip
        eval_model.temperature.fill_(fit_temperature(val_logits, y_va))
    temperature = float(eval_model.temperature)
    x_te = torch.from_numpy(x_test).to(device)
    test_loss, test_acc = loss_accuracy(
        predict_logits(
            eval_model, x_te, batch_size=cfg.eval_batch_size, tta=cfg.tta,
            channels_last=cfg.channels_last,
        ),
        torch.from_numpy(y_test),
    )  # fmt: skip
    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "best_val_accuracy": best_acc,
        "best_epoch": best_epoch,
        "temperature": temperature,
        "epochs": cfg.epochs,
        "train_seconds": train_seconds,
        "model": cfg.model,
        "params": count_params(model.net),
        "seed": cfg.seed,
        "preset": cfg.preset,
        "train_images": len(x_tr),
        "val_images": len(x_va),
        "processes": dist.world,
        "effective_batch_size": cfg.batch_size * dist.world,
        "ranks_identical": identical,  # all processes ended with the same weights
        "lr": cfg.lr,
        "device": str(device),
        "hardware": hardware(str(device)),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "commit": git_commit(),
        "command": command,
        "resumed": resume,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    norm = {**meta["normalization"], "temperature": temperature}
    final = {**meta, "normalization": norm, "epoch": best_epoch, "metrics": metrics}
    save_model(run_dir, eval_model, final)
    write_plots(run_dir, history)
    if out is None:
        point_latest(run_dir)
    if dist.world > 1:
        torch.distributed.barrier()
    return run_dir


def resume_run(run_dir: str | os.PathLike, *, data_dir=None, quiet: bool = False) -> Path:
    """Continue the run in ``run_dir`` from its last complete epoch."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ValueError(
            f"{run_dir} is not a run directory (no config.json); resume takes the directory "
            "that `fmnist train` printed."
        )
    saved = json.loads((run_dir / "config.json").read_text())
    if "members" in saved:
        raise ValueError(
            f"{run_dir} is an ensemble of finished runs (`fmnist ensemble`): it trains "
            "nothing, so there is nothing to resume. Resume an unfinished member run instead."
        )
    if (run_dir / "metrics.json").is_file():
        raise ValueError(f"{run_dir} is already complete (it has metrics.json); nothing to resume.")
    cfg = TrainConfig.from_dict(saved)
    return train(cfg, out=run_dir, data_dir=data_dir, quiet=quiet, resume=True)


def write_plots(run_dir: Path, history: list[dict]) -> None:
    """Write the notebook's two figures, accuracy.png and loss.png, into ``run_dir``."""
    from .plots import history_figure, save

    for metric in ("accuracy", "loss"):
        save(history_figure(history, metric), run_dir / f"{metric}.png")


def load_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict, list[dict]]:
    """Read a run directory's config, metrics and history."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return cfg, metrics, read_history(run_dir / "history.csv")
