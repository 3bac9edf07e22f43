"""Where the time of a training step and of batch inference goes, op by op (torch.profiler).

    python benchmarks/profile_step.py [--preset seed] [--batch 32] [--precision auto]
                                      [--eval-batch 256] [--steps 200]

Times training steps of the preset's model at --batch (the notebook's 32 by default) the
way fmnist.training does them (channels_last, autocast in the precision that `auto` picks
here, the preset's optimizer), then profiles 50 more and prints the ops that took the most
time. Then the same for predicting 10,000 images in batches of --eval-batch through
fmnist.evaluation.predict_logits. Random pixels: the figures are about speed only. Run it
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from fmnist.config import get_preset
from fmnist.evaluation import predict_logits
from fmnist.models import to_input
from fmnist.recipe import build_model, make_optimizer
from fmnist.system import autocast, hardware, resolve_precision, torch_settings

ROWS = 12  # ops printed per table


def top_ops(prof: profile) -> str:
    """The ops with the most self time, as torch.profiler's table."""
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ROWS)


def training(args: argparse.Namespace, precision: str) -> None:
    """Time and profile training steps at --batch."""
    cfg = get_preset(args.preset, batch_size=args.batch)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model)
    n = args.batch * (args.steps + 100)
    x = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)  # (N, 28, 28)
    y = torch.randint(0, 10, (n,))
    cpu = torch.device("cpu")

    def step(i: int) -> None:
        part = slice(i * args.batch, (i + 1) * args.batch)
        xb = to_input(x[part]).contiguous(memory_format=torch.channels_last)
        with autocast(precision, cpu):
            logits = model(xb)  # (B, 10)
        loss = F.cross_entropy(logits.float(), y[part], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(50):
        step(i)
    t = time.perf_counter()
    for i in range(50, 50 + args.steps):
        step(i)
    ms = (time.perf_counter() - t) / args.steps * 1e3
    print(f"training step, {cfg.model} at batch {args.batch}: {ms:.2f} ms "
          f"({args.batch / ms * 1e3:,.0f} images/s)")  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(50 + args.steps, 100 + args.steps):
            step(i)
    print(top_ops(prof))


def inference(args: argparse.Namespace, precision: str) -> None:
    """Time and profile predicting 10,000 images in batches of --eval-batch."""
    cfg = get_preset(args.preset)
    model = build_model(cfg).eval().to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (10_000, 28, 28), dtype=torch.uint8)

    def run() -> None:
        predict_logits(model, x, batch_size=args.eval_batch, tta=cfg.tta, precision=precision)

    run()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    print(f"inference, {cfg.model} in batches of {args.eval_batch}"
          f"{' with flip-TTA' if cfg.tta else ''}: {len(x) / best:,.0f} images/s")  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(top_ops(prof))


def main() -> None:
    """Print the timings and the op tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="seed")
    ap.add_argument("--batch", type=int, default=32, help="training batch (32)")
    ap.add_argument("--eval-batch", type=int, default=256, help="inference batch (256)")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16")
    ap.add_argument("--steps", type=int, default=200, help="timed training steps (200)")
    args = ap.parse_args()
    precision = resolve_precision(args.precision)
    print(f"{hardware()}; precision {precision}; threads {torch.get_num_threads()}")
    with torch_settings(deterministic=True):  # as fmnist.training runs
        training(args, precision)
    with torch_settings():  # as Classifier runs
        inference(args, precision)


if __name__ == "__main__":
    main()
