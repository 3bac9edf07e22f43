"""Training speed and accuracy per preset, over seeds; and the seed CNN's batch-size sweep.

    python benchmarks/train_speed.py --presets seed default --seeds 3
    python benchmarks/train_speed.py --sweep 32 64 128 256 512
    python benchmarks/train_speed.py --presets best --seeds 2 --first-seed 1  # seeds 1 and 2

Prints, per preset: seconds per epoch, training images per second, achieved GFLOP/s and
percent of the machine's peak (the GFLOP/s of a 4096x4096 fp32 matrix product on the same
threads, measured in the same run), the elapsed time at which validation accuracy first
reached 90..95 %, and the test accuracy as mean ± std over seeds. FLOPs are counted by
torch's FlopCounterMode: a training image costs forward + backward, a validation image
forward only. Timings are wall clock, so run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import (  # benchmarks/benchlib.py
    first_time_reaching,
    matmul_peak_gflops,
    mean_std,
    time_per_call,
    train_flops_per_image,
)

from fmnist.config import get_preset
from fmnist.models import count_flops, create_model
from fmnist.recipe import build_model, make_optimizer
from fmnist.rundir import Run
from fmnist.system import git_commit, hardware, keep_freed_memory
from fmnist.training import train

THRESHOLDS = (0.90, 0.92, 0.93, 0.94, 0.95)


def bench_preset(
    name: str,
    seeds: list[int],
    epochs: int | None,
    peak: float,
    keep: Path | None = None,
    tensorboard: bool = False,
) -> dict:
    """Train preset ``name`` once per seed and summarise speed and accuracy."""
    runs = []
    for seed in seeds:
        cfg = get_preset(name, seed=seed, epochs=epochs, tensorboard=tensorboard)
        with tempfile.TemporaryDirectory() as tmp:
            out = (keep or Path(tmp)) / f"{name}-seed{seed}"
            shutil.rmtree(out, ignore_errors=True)  # --keep DIR again: this run replaces it
            run = train(cfg, out=out, quiet=True)
            history = Run(run).history()
            metrics = json.loads((run / "metrics.json").read_text())
        runs.append((cfg, history, metrics))
        print(
            f"  {name} seed {seed}: test {metrics['test_accuracy']:.4f} in "
            f"{metrics['train_seconds']:.0f} s",
            flush=True,
        )
    cfg = runs[0][0]
    model = build_model(cfg)
    train_flops, fwd_flops = train_flops_per_image(model), count_flops(model)
    n_train, n_val = runs[0][2]["train_images"], runs[0][2]["val_images"]
    epoch_s = [h["seconds"] for _, hist, _ in runs for h in hist]
    sec, sec_std = mean_std(epoch_s)
    gflops = (n_train * train_flops + n_val * fwd_flops) / sec / 1e9
    reach = [first_time_reaching(hist, THRESHOLDS) for _, hist, _ in runs]
    return {
        "preset": name,
        "model": cfg.model,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "seconds_per_epoch": sec,
        "seconds_per_epoch_std": sec_std,
        "train_images_per_second": n_train / sec,
        "gflops": gflops,
        "percent_of_peak": 100 * gflops / peak,
        "train_seconds": mean_std([m["train_seconds"] for *_, m in runs]),
        "test_accuracy": mean_std([m["test_accuracy"] for *_, m in runs]),
        "time_to_val_accuracy": {f"{th:.2f}": [r[th] for r in reach] for th in THRESHOLDS},
        "seeds": seeds,
    }


def sweep(batch_sizes: list[int], peak: float, seconds: float = 3.0) -> list[dict]:
    """Training-step throughput of the seed CNN at each batch size (synthetic data)."""
    out = []
    for bs in batch_sizes:
        torch.manual_seed(0)
        cfg = get_preset("seed", batch_size=bs)
        model = build_model(cfg).to(memory_format=torch.channels_last)
        opt = make_optimizer(cfg, model)  # as train() builds it: fused Adam
        x = torch.rand(bs, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bs,))

        def step(
            model: torch.nn.Module = model,
            opt: torch.optim.Optimizer = opt,
            x: torch.Tensor = x,
            y: torch.Tensor = y,
        ) -> None:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        probe = min(time_per_call(step, 3))
        times = time_per_call(step, max(5, int(seconds / probe)))
        per_step = sorted(times)[len(times) // 2]  # median: robust to a noisy neighbour
        flops = train_flops_per_image(build_model(get_preset("seed")))
        gflops = bs * flops / per_step / 1e9
        out.append({"batch_size": bs, "images_per_second": bs / per_step, "gflops": gflops,
                    "percent_of_peak": 100 * gflops / peak})  # fmt: skip
    return out


def main() -> None:
    """Run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="*", default=["seed", "default"])
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="the first seed (run a series in parts)"
    )
    p.add_argument("--epochs", type=int, help="override the presets' epochs (quick checks)")
    p.add_argument("--sweep", type=int, nargs="*", help="batch sizes for the seed CNN sweep")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--keep", type=Path, help="keep the run directories here (<preset>-seed<n>)")
    p.add_argument("--tensorboard", action="store_true", help="train with --tensorboard logging")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    print(f"hardware: {hardware()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"commit: {git_commit()}; date: {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"peak (4096^2 fp32 matmul): {peak:.0f} GFLOP/s")
    results: dict = {"hardware": hardware(), "peak_gflops": peak, "commit": git_commit()}
    if args.sweep:
        keep_freed_memory()  # as train() does
        rows = sweep(args.sweep, peak)
        results["sweep"] = rows
        print(f"\nseed CNN training step ({train_flops_per_image(create_model('seed')) / 1e6:.1f}"
              " MFLOP per image, forward + backward):")  # fmt: skip
        print(f"{'batch':>6} {'img/s':>8} {'GFLOP/s':>8} {'% peak':>7}")
        for r in rows:
            print(f"{r['batch_size']:>6} {r['images_per_second']:>8.0f} {r['gflops']:>8.1f} "
                  f"{r['percent_of_peak']:>6.0f}%")  # fmt: skip
    presets = []
    for name in args.presets if not args.sweep else []:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        presets.append(bench_preset(name, seeds, args.epochs, peak, args.keep, args.tensorboard))
    results["presets"] = presets
    if presets:
        head = ("preset", "model", "batch", "ep", "s/epoch", "img/s", "GFLOP/s", "%peak",
                "train s", "test acc")  # fmt: skip
        print("\n" + " | ".join(head))
        for r in presets:
            acc, acc_sd = r["test_accuracy"]
            tsec, tsec_sd = r["train_seconds"]
            print(
                f"{r['preset']} | {r['model']} | {r['batch_size']} | {r['epochs']} | "
                f"{r['seconds_per_epoch']:.1f} | {r['train_images_per_second']:.0f} | "
                f"{r['gflops']:.0f} | {r['percent_of_peak']:.0f}% | {tsec:.0f} ± {tsec_sd:.0f} | "
                f"{acc:.4f} ± {acc_sd:.4f}"
            )
        print("\ntime (s) at which validation accuracy first reached (per seed; - = never):")
        for r in presets:
            cells = [
                f"{th}: " + ",".join("-" if t is None else f"{t:.0f}" for t in ts)
                for th, ts in r["time_to_val_accuracy"].items()
            ]
            print(f"  {r['preset']}: " + "  ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
