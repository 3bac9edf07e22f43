"""Training: ``train(cfg)`` reads top to bottom as set-up, the epoch loop, and the finish.

It loads the data once as uint8 tensors on the device, carves a seeded validation split
from the training set, trains epoch by epoch (batch, augment, forward, loss, backward,
step), validates after every epoch, keeps the weights of the best validation epoch,
scores the test set once at the end, and writes a run directory (fmnist.rundir).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import augment, photoaug, tboard
from .calibration import fit_temperature
from .checkpoint import load_state, pack_state, save_model, save_state, unpack_state
from .config import TrainConfig, load_config
from .data import CLASSES, load_data, split_indices
from .distributed import Dist, init_distributed, scaled_lr
from .errors import ConfigError, TrainingDiverged, TrainingInterrupted
from .evaluation import loss_accuracy, predict_logits, score_test
from .models import Normalized, count_params, to_input
from .plots import write_history_figures
from .progress import EpochDisplay
from .recipe import build_model, make_ema, make_optimizer, make_scheduler
from .rundir import STATE, Run, provenance
from .runlock import hold
from .system import autocast, resolve_precision, torch_settings, versions


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
    dist: Dist | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    progress: EpochDisplay | None = None,
    precision: str = "fp32",  # or bf16: autocast; weights, optimizer and loss stay fp32
) -> tuple[float, float]:
    """One pass over (x uint8 (N, 28, 28), y int64 (N,)); returns (mean loss, accuracy).

    With several processes, every process draws the same permutation and takes its own
    equal-sized shard; ``model`` is then DistributedDataParallel, which all-reduces the
    gradients in ``backward``.
    """
    dist = dist or Dist()
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
        if cfg.photo > 0:  # (B, 28, 28) uint8, made to look like segmented phone photos
            xb = photoaug.photo(xb, y[idx], cfg.photo, aug)
        xb = to_input(xb).contiguous(memory_format=fmt)  # (B, 1, 28, 28) float in [0, 1]
        yb = y[idx]
        with autocast(precision, dev):
            logits = model(xb)  # (B, 10), bf16 under autocast
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
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
    return TrainingDiverged.check(epoch, (totals / (n * dist.world)).tolist(), cfg.lr)


def validate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, dist: Dist,
    precision: str = "fp32",
) -> tuple[float, float]:  # fmt: skip
    """(loss, accuracy) on (x, y); each process scores its shard and the sums are reduced."""
    xs, ys = x[dist.rank :: dist.world], y[dist.rank :: dist.world]
    logits = predict_logits(model, xs, batch_size=cfg.eval_batch_size, tta=cfg.tta,
                            precision=precision)  # fmt: skip
    loss, acc = loss_accuracy(logits, ys)
    totals = dist.sum(torch.tensor([loss * len(ys), acc * len(ys)], dtype=torch.float64,
                                   device=x.device))  # fmt: skip
    return (totals / len(y)).tolist()


@dataclass
class Setup:
    """Everything a run trains with: the data on the device, the model and its optimiser."""

    dist: Dist
    device: torch.device
    x_tr: torch.Tensor  # (N, 28, 28) uint8 on the device
    y_tr: torch.Tensor  # (N,) int64
    x_va: torch.Tensor
    y_va: torch.Tensor
    model: Normalized  # the trained weights
    net: torch.nn.Module  # what the loop calls: model, or DistributedDataParallel(model)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    steps_per_epoch: int
    precision: str  # resolved from cfg.precision on this device: fp32 | bf16

    @property
    def eval_model(self) -> Normalized:
        """The weights that are validated and kept: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class Progress:
    """Where a run stands: its history and its best validation epoch so far."""

    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def next_epoch(self) -> int:
        """The first epoch still to train."""
        return len(self.history) + 1


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
    if cfg.tensorboard:
        tboard.require()  # a missing package is said before anything is loaded or written
    with torch_settings(cfg.threads, deterministic=True), contextlib.ExitStack() as held:
        dist, device = init_distributed(cfg.device)
        latest = out is None  # a new directory under runs_root, then <runs_root>/latest
        if dist.main:  # the one writer holds the directory: a second writer is refused
            out = out or Run.create(cfg.preset, runs_root).path
            out = held.enter_context(hold(out, created=latest, new_run=not resume))
        torch.manual_seed(cfg.seed)  # config.json keeps --lr; the optimiser runs it scaled
        s = setup(scaled_lr(cfg, dist.world), dist, device, data_dir)
        run, p = open_run(cfg, s, out, runs_root, resume)
        meta = model_meta(cfg, s.model)
        wants_board = cfg.tensorboard and dist.main  # a SummaryWriter, closed with the run
        board = held.enter_context(tboard.open_writer(run.path)) if wants_board else None
        display = EpochDisplay(quiet or not dist.main)
        elapsed0 = p.history[-1]["elapsed_seconds"] if p.history else 0.0
        t0 = time.perf_counter()
        epoch = p.next_epoch - 1
        try:
            for epoch in range(p.next_epoch, cfg.epochs + 1):
                if stop_reason(cfg, p, epoch):  # checked first: a resume stops where it would
                    break
                t_epoch = time.perf_counter()
                display.start(epoch, cfg.epochs, s.steps_per_epoch)
                lr = s.opt.param_groups[0]["lr"]
                train_loss, train_acc = train_epoch(
                    s.net, s.opt, s.sched, s.x_tr, s.y_tr, cfg, epoch, dist, s.ema, display,
                    s.precision)  # fmt: skip
                dist.sync_buffers(s.eval_model)
                val_loss, val_acc = validate(s.eval_model, s.x_va, s.y_va, cfg, dist, s.precision)
                now = time.perf_counter()
                row = {
                    "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                    "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
                    "seconds": now - t_epoch, "elapsed_seconds": elapsed0 + now - t0,
                }  # fmt: skip
                record_epoch(s, p, run, meta, row)
                if board is not None:
                    tboard.log_epoch(board, row)
                display.end(row, cfg.epochs)
                if on_epoch is not None:
                    on_epoch(row)
        except KeyboardInterrupt:
            display.close()
            raise TrainingInterrupted(run.path, epoch - 1) from None
        train_seconds = elapsed0 + time.perf_counter() - t0
        identical = dist.identical(s.model)  # a collective: every process takes part
        if not dist.main:
            torch.distributed.barrier()  # rank 0 scores the test set and writes the results
            return run.path
        metrics = finish(cfg, s, p, run, meta, data_dir, board)
        metrics |= {"train_seconds": train_seconds, "ranks_identical": identical,
                    "resumed": resume, **provenance(str(device), command)}  # fmt: skip
        write_results(run, s, p, meta, metrics)
        if latest:
            run.point_latest()
        if dist.world > 1:
            torch.distributed.barrier()
        return run.path


def setup(cfg: TrainConfig, dist: Dist, device: torch.device, data_dir: Any) -> Setup:
    """Load the data onto the device, split it, and build the model and its optimiser."""
    (x_all, y_all), _ = load_data(data_dir)
    if cfg.limit_train:
        x_all, y_all = x_all[: cfg.limit_train], y_all[: cfg.limit_train]
    tr_idx, va_idx = split_indices(len(x_all), cfg.val_split, cfg.seed)
    # The whole dataset lives on the device as uint8 (47 MB); batches are index slices.
    x_tr, x_va = (torch.from_numpy(x_all[i]).to(device) for i in (tr_idx, va_idx))
    y_tr, y_va = (torch.from_numpy(y_all[i]).long().to(device) for i in (tr_idx, va_idx))
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and dist.world > 1:
        if device.type == "cpu":
            raise ConfigError(
                "sync_bn needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU. Drop "
                "sync_bn; each process then normalises with its own shard's statistics."
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = make_optimizer(cfg, model)
    steps_per_epoch = math.ceil((len(x_tr) // dist.world) / cfg.batch_size)
    sched = make_scheduler(cfg, opt, cfg.epochs * steps_per_epoch)
    ema = make_ema(cfg, model) if cfg.ema else None
    # DistributedDataParallel averages gradients across processes during backward.
    net = model if dist.world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    return Setup(dist, device, x_tr, y_tr, x_va, y_va, model, net, opt, sched, ema,
                 steps_per_epoch, resolve_precision(cfg.precision, device))  # fmt: skip


def open_run(
    cfg: TrainConfig, s: Setup, out: Any, runs_root: Any, resume: bool
) -> tuple[Run, Progress]:
    """The run directory and where training stands: restored from it, or a new one."""
    if resume:
        run = Run(out)
        tensors, info = load_state(run / STATE)
        unpack_state(tensors, info, s.model, s.opt, s.sched, s.ema)
        best = {k[5:]: v.to(s.device) for k, v in tensors.items() if k.startswith("best.")}
        return run, Progress(info["history"], info["best_val_accuracy"], info["best_epoch"], best)
    run = Run(out or runs_root)  # rank 0 holds its directory (train); the others never write
    if s.dist.main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(asdict(cfg))
    return run, Progress()


def pack_run_state(s: Setup, p: Progress) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The resumable state after an epoch: weights, optimiser, RNGs, best weights, history."""
    tensors, info = pack_state(s.model, s.opt, s.sched, s.ema)
    tensors |= {f"best.{k}": v for k, v in p.best_state.items()}
    info |= {"epoch": len(p.history), "history": p.history, "best_val_accuracy": p.best_acc,
             "best_epoch": p.best_epoch}  # fmt: skip
    return tensors, info


def model_meta(cfg: TrainConfig, model: Normalized) -> dict[str, Any]:
    """What model.json says about the model: enough to rebuild and use it."""
    return {
        "model": cfg.model,
        "model_args": cfg.model_args,
        "classes": list(CLASSES),
        "normalization": {
            "mean": float(model.mean),
            "std": float(model.std),
            "input": "float32 pixels in [0, 1], shape (N, 1, 28, 28), garment light on black",
        },
        "tta": cfg.tta,
        "config": asdict(cfg),
        "versions": versions(),
    }


def record_epoch(s: Setup, p: Progress, run: Run, meta: dict, row: dict) -> None:
    """Add an epoch's row to the history; keep (and save) the best weights; save the state."""
    TrainingDiverged.check_row(row, meta["config"]["lr"])  # --lr, as train_epoch's check
    p.history.append(row)
    if row["val_accuracy"] > p.best_acc:
        p.best_acc, p.best_epoch = row["val_accuracy"], row["epoch"]
        p.best_state = copy.deepcopy(s.eval_model.state_dict())
        if s.dist.main:
            save_model(run.path, s.eval_model, {**meta, "epoch": row["epoch"]})
    if s.dist.main:  # the resumable state: one file, replaced after every epoch
        save_state(run / STATE, *pack_run_state(s, p))
        run.write_history(p.history)


def stop_reason(cfg: TrainConfig, p: Progress, epoch: int) -> str | None:
    """Why training stops early, before ``epoch`` (``cfg.patience``), or None."""
    if cfg.patience and epoch <= cfg.epochs and epoch - 1 - p.best_epoch >= cfg.patience:
        return (
            f"validation accuracy did not improve for {cfg.patience} epochs after epoch "
            f"{p.best_epoch} ({p.best_acc:.4f})"
        )
    return None


def finish(
    cfg: TrainConfig, s: Setup, p: Progress, run: Run, meta: dict, data_dir: Any, board: Any = None
) -> dict[str, Any]:
    """Best weights back, temperature fitted, the test set scored once: the run's metrics."""
    model = s.eval_model
    model.load_state_dict(p.best_state)
    how = {"batch_size": cfg.eval_batch_size, "tta": cfg.tta, "precision": s.precision}
    if cfg.calibrate:  # label smoothing, for one, leaves the probabilities too low
        val_logits = predict_logits(model, s.x_va, **how)
        model.temperature.fill_(fit_temperature(val_logits, s.y_va))
    test = score_test(model, data_dir=data_dir, **how)
    metrics = {
        "test_accuracy": test.metrics["accuracy"],
        "test_loss": test.metrics["loss"],
        "best_val_accuracy": p.best_acc,
        "best_epoch": p.best_epoch,
        "temperature": float(model.temperature),
        "epochs": cfg.epochs,
        "epochs_trained": len(p.history),
        "stopped_early": stop_reason(cfg, p, len(p.history) + 1),
        "model": cfg.model,
        "params": count_params(s.model.net),
        "seed": cfg.seed,
        "preset": cfg.preset,
        "train_images": len(s.x_tr),
        "val_images": len(s.x_va),
        "processes": s.dist.world,
        "effective_batch_size": cfg.batch_size * s.dist.world,
        "lr": cfg.lr,
        "precision": s.precision,  # as computed here; config.json keeps the setting (auto)
        "device": str(s.device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    if board is not None:
        tboard.log_final(board, cfg, metrics, test)
    return metrics


def write_results(run: Run, s: Setup, p: Progress, meta: dict, metrics: dict[str, Any]) -> None:
    """The best weights with their metrics, the curves, and metrics.json last."""
    normalization = {**meta["normalization"], "temperature": metrics["temperature"]}
    extra = {"normalization": normalization, "epoch": p.best_epoch, "metrics": metrics}
    save_model(run.path, s.eval_model, {**meta, **extra})
    write_history_figures(run.path, p.history)
    run.write_metrics(metrics)  # last: until it exists, the run can be resumed


def resume_run(
    run_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, quiet: bool = False
) -> Path:
    """Continue the run in ``run_dir`` from its last complete epoch."""
    run = Run(run_dir).require_resumable()
    cfg = load_config(run.path / "config.json")  # checked as --config checks a file
    return train(cfg, out=run.path, data_dir=data_dir, quiet=quiet, resume=True)
