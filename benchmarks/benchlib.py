"""Measurements shared by the benchmark scripts: machine peak, model FLOPs, throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fmnist.models import INPUT_SHAPE


def matmul_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Practical fp32 peak: GFLOP/s of an n x n matrix product on torch's current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def train_flops_per_image(
    model: torch.nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE
) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    x = torch.rand(2, *input_shape)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def time_per_call(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def first_time_reaching(
    history: Sequence[dict], thresholds: Sequence[float]
) -> dict[float, float | None]:
    """Elapsed seconds at which validation accuracy first reached each threshold."""
    out: dict[float, float | None] = {}
    for th in thresholds:
        out[th] = next(
            (float(h["elapsed_seconds"]) for h in history if float(h["val_accuracy"]) >= th), None
        )
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
