"""What a training config builds: the model behind its normalisation, the optimizer, the
per-step learning-rate schedule and the average of the weights (used by `train` and by the
speed benchmarks)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import TrainConfig
from .data import MEAN, STD
from .models import Normalized, create_model


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


def ema_update(decay: float) -> Callable[..., None]:
    """torch's EMA update with TensorFlow's warm-up: decay min(decay, (1 + n) / (10 + n)).

    Without the warm-up the average starts from the random initial weights, which keep a
    weight of decay^steps (0.999^422 = 0.66 after one epoch of 54,000 images at batch 128):
    a short run's averaged model scored chance. With it the average follows the recent
    weights early and reaches ``decay`` by step 9 / (1 - decay) - 10 (8,990 at 0.999).
    """
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    def update(ema_params: list, params: list, n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)  # updates so far (tf.train.ExponentialMovingAverage's num_updates)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, n_averaged)

    return update


def make_ema(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.swa_utils.AveragedModel:
    """The exponential moving average of ``model``'s weights and buffers (cfg.ema)."""
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True
    )
