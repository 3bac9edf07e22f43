"""Fit a recipe to a time budget: time a few real steps here, then set the epochs.

`fmnist train --budget MINUTES` times training steps and a validation pass of the chosen
recipe on this machine (same model, batch, augmentation, precision and threads), and sets
``epochs`` so that the timing itself, training, the per-epoch validation and the final
test score end within the budget (the report, unless --no-report, comes after). The
config written to the run directory holds the chosen epochs, so a rerun of its
config.json repeats the run exactly, with no timing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from .config import TrainConfig
from .distributed import Dist, resolve_device
from .errors import ConfigError
from .system import torch_settings

TIMED_STEPS = 20  # training steps timed, after WARMUP_STEPS untimed ones
WARMUP_STEPS = 3
TIMED_IMAGES = 2_000  # validation images timed
TEST_IMAGES = 10_000  # scored once at the end
MARGIN = 0.8  # of the budget planned: a shared machine's epochs vary by +-20 %, start-up, files


@dataclass(frozen=True)
class Timing:
    """What one epoch of a recipe costs here, measured."""

    step_seconds: float  # one training step of cfg.batch_size images
    steps_per_epoch: int
    image_seconds: float  # scoring one image (validation, test), TTA included

    def epoch_seconds(self, val_images: int) -> float:
        """One epoch: its training steps and the validation pass."""
        return self.step_seconds * self.steps_per_epoch + self.image_seconds * val_images


def time_recipe(cfg: TrainConfig, data_dir: Any = None) -> tuple[Timing, int]:
    """Time ``cfg``'s training steps and scoring on this machine; also the validation size."""
    from .training import setup, train_epoch, validate

    # Enough scheduled steps for the timed ones (a one-cycle schedule refuses extra steps).
    cfg = dataclasses.replace(cfg, epochs=max(cfg.epochs, WARMUP_STEPS + TIMED_STEPS))
    with torch_settings(cfg.threads, deterministic=True):
        s = setup(cfg, Dist(), resolve_device(cfg.device), data_dir)
        bs = cfg.batch_size
        for steps in (WARMUP_STEPS, TIMED_STEPS):  # the first steps allocate: not timed
            x, y = s.x_tr[: steps * bs], s.y_tr[: steps * bs]
            start = time.perf_counter()
            train_epoch(s.net, s.opt, s.sched, x, y, cfg, 1, s.dist, s.ema, None, s.precision)
            step_seconds = (time.perf_counter() - start) / math.ceil(len(x) / bs)
        k = min(TIMED_IMAGES, len(s.x_va))  # the split is never empty (0 < val_split < 1)
        start = time.perf_counter()
        validate(s.eval_model, s.x_va[:k], s.y_va[:k], cfg, s.dist, s.precision)
        image_seconds = (time.perf_counter() - start) / k
    timing = Timing(step_seconds, s.steps_per_epoch, image_seconds)
    return timing, len(s.x_va)


def check_minutes(minutes: float) -> None:
    """Refuse a budget that is not a positive, finite number of minutes."""
    if not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(
            f"--budget must be a positive number of minutes, got {minutes}: e.g. --budget 60."
        )


def epochs_for(
    minutes: float, timing: Timing, val_images: int, preset: str, spent: float = 0.0
) -> int:
    """The most epochs that fit ``minutes``, less the ``spent`` seconds (the timing's own),
    with their validation and the finish (test score, calibration)."""
    check_minutes(minutes)
    epoch = timing.epoch_seconds(val_images)
    finish = timing.image_seconds * (TEST_IMAGES + val_images)
    usable = minutes * 60 * MARGIN - spent - finish
    epochs = math.floor(usable / epoch) if usable > 0 else 0
    if epochs < 1:
        need = (spent + epoch + finish) / (60 * MARGIN)
        raise ConfigError(
            f"A budget of {minutes:g} min does not fit one epoch of preset {preset!r} on this "
            f"machine: measured {epoch:.0f} s per epoch, {finish:.0f} s for the test score "
            f"and {spent:.0f} s for the timing itself. Give --budget {math.ceil(need)} or "
            "more, or a faster preset."
        )
    return epochs


def fit_budget(cfg: TrainConfig, minutes: float, data_dir: Any = None) -> TrainConfig:
    """``cfg`` with the epochs that fit ``minutes`` of training on this machine."""
    check_minutes(minutes)  # before the timing's seconds
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ConfigError(
            "--budget times one process, and under torchrun every process must train the "
            "same epochs: time it with --budget on one process, then give --epochs."
        )
    start = time.perf_counter()
    timing, val_images = time_recipe(cfg, data_dir)
    spent = time.perf_counter() - start
    epochs = epochs_for(minutes, timing, val_images, cfg.preset, spent)
    print(
        f"budget {minutes:g} min: {timing.step_seconds * 1e3:.1f} ms per step x "
        f"{timing.steps_per_epoch} steps + validation = "
        f"{timing.epoch_seconds(val_images):.1f} s per epoch here ({spent:.0f} s to time "
        f"it) -> {epochs} epochs instead of the recipe's {cfg.epochs}"
    )
    return dataclasses.replace(cfg, epochs=epochs)
