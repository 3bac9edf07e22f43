"""Training: one config dataclass, named presets, and the loop in plain sight.

``train(cfg)`` loads the data once as uint8 tensors on the device, carves a seeded
validation split from the training set, trains epoch by epoch (batch, augment, forward,
loss, backward, step), validates after every epoch, keeps the weights of the best
validation epoch, evaluates the test set once at the end, and writes a run directory.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import augment
from .checkpoint import atomic_write_json, save_model
from .data import CLASSES, MEAN, STD, load_data, split_indices
from .evaluate import loss_accuracy, predict_logits
from .models import Normalized, count_params, create_model, to_input
from .system import git_commit, hardware, versions


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run directory."""

    preset: str = "seed"  # name of the preset this config started from
    model: str = "seed"  # registry name, see `fmnist models`
    model_args: dict[str, Any] = field(default_factory=dict)  # constructor arguments
    epochs: int = 10  # passes over the training split
    batch_size: int = 32  # images per optimisation step
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
    val_split: float = 0.2  # fraction of the 60,000 training images held out
    limit_train: int | None = None  # use only the first N training images (quick runs)
    seed: int = 0  # seeds the split, the initialisation, shuffling and augmentation
    eval_batch_size: int = 1000  # images per batch when evaluating
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
    # What `fmnist train` and `make demo` run.
    "default": TrainConfig(preset="default"),
}


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """Return a copy of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}.")
    base = dataclasses.asdict(PRESETS[name])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(base)


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
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )


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


def new_run_dir(cfg: TrainConfig, runs_root: Path = Path("runs")) -> Path:
    """Create and return ``runs/<YYYYmmdd-HHMMSS>-<preset>`` (suffixed if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = runs_root / (f"{stamp}-{cfg.preset}" + (f"-{i}" if i else ""))
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


def train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    progress: Progress | None = None,
) -> tuple[float, float]:
    """One pass over (x uint8 (N, 28, 28), y int64 (N,)); returns (mean loss, accuracy)."""
    model.train()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    n = len(x)
    perm = torch.randperm(n, device=x.device, generator=gen)
    # Loss and correct counts accumulate on the device: no host sync per step.
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    steps = math.ceil(n / cfg.batch_size)
    report_every = max(1, steps // 20)
    for step in range(steps):
        idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        xb = augment.augment_batch(
            x[idx], flip_p=cfg.flip, translate_px=cfg.translate, erase_p=cfg.erase, gen=gen
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
            ema.update_parameters(model)
        with torch.no_grad():
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        if progress is not None and (step + 1) % report_every == 0:
            seen = min(n, (step + 1) * cfg.batch_size)
            progress.update(report_every, loss_sum.item() / seen, correct.item() / seen)
    if progress is not None:
        progress.update(steps % report_every)
    return loss_sum.item() / n, correct.item() / n


def train(
    cfg: TrainConfig,
    *,
    out: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = "runs",
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> Path:
    """Train according to ``cfg``, write the run directory, and return its path."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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
    opt = make_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    sched = make_scheduler(cfg, opt, cfg.epochs * steps_per_epoch)
    ema = None
    if cfg.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema),
            use_buffers=True,
        )  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    run_dir = Path(out) if out else new_run_dir(cfg, Path(runs_root))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", dataclasses.asdict(cfg))
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

    progress = Progress(quiet)
    history: list[dict] = []
    best_acc, best_epoch, best_state = -1.0, 0, None
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        progress.start(epoch, cfg.epochs, steps_per_epoch)
        lr = opt.param_groups[0]["lr"]
        train_loss, train_acc = train_epoch(model, opt, sched, x_tr, y_tr, cfg, gen, ema, progress)
        eval_model = ema.module if ema is not None else model
        val_loss, val_acc = loss_accuracy(
            predict_logits(
                eval_model, x_va, batch_size=cfg.eval_batch_size, tta=cfg.tta,
                channels_last=cfg.channels_last,
            ),
            y_va,
        )  # fmt: skip
        now = time.perf_counter()
        row = {
            "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
            "seconds": now - t_epoch, "elapsed_seconds": now - t0,
        }  # fmt: skip
        history.append(row)
        write_history(run_dir / "history.csv", history)
        progress.end(row, cfg.epochs)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(eval_model.state_dict())
            save_model(run_dir, eval_model, {**meta, "epoch": epoch})
    train_seconds = time.perf_counter() - t0

    # The test set is touched once, with the best validation epoch's weights.
    model.load_state_dict(best_state)
    x_te = torch.from_numpy(x_test).to(device)
    test_loss, test_acc = loss_accuracy(
        predict_logits(
            model, x_te, batch_size=cfg.eval_batch_size, tta=cfg.tta,
            channels_last=cfg.channels_last,
        ),
        torch.from_numpy(y_test),
    )  # fmt: skip
    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "best_val_accuracy": best_acc,
        "best_epoch": best_epoch,
        "epochs": cfg.epochs,
        "train_seconds": train_seconds,
        "model": cfg.model,
        "params": count_params(model.net),
        "seed": cfg.seed,
        "preset": cfg.preset,
        "train_images": len(x_tr),
        "val_images": len(x_va),
        "device": str(device),
        "hardware": hardware(str(device)),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "commit": git_commit(),
        "command": command,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    save_model(run_dir, model, {**meta, "epoch": best_epoch, "metrics": metrics})
    write_plots(run_dir, history)
    if out is None:
        point_latest(run_dir)
    return run_dir


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
