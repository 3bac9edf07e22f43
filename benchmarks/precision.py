"""bf16 against fp32 in PyTorch, int8 against fp32 in ONNX Runtime, on the CPU at hand.

    python benchmarks/precision.py                       # matmul peaks, training steps, inference
    python benchmarks/precision.py --onnx RUN_DIR        # + ONNX Runtime fp32 vs int8 of a run
    python benchmarks/precision.py --accuracy --skip-speed   # the default preset, fp32 then bf16

Every speed figure interleaves the two precisions round by round (A B A B ...), so that a
neighbour's load hits both alike, and gives the median over the rounds. bf16 is measured
whatever the CPU: on one without AMX or AVX512-BF16 it shows how slow it is there (and
fmnist's `auto` never picks it). Untrained weights time the same as trained ones; the
accuracy runs train the `default` preset for real (5-9 min each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fmnist.config import get_preset
from fmnist.data import load_data
from fmnist.evaluation import predict_logits
from fmnist.models import to_input
from fmnist.recipe import build_model, make_optimizer
from fmnist.system import (
    SlowPrecisionWarning,
    autocast,
    cpu_flags,
    git_commit,
    hardware,
    keep_freed_memory,
    versions,
)
from fmnist.training import train

PRESET_MODELS = {"seed": "seed", "fast": "default", "resnet": "best"}  # model -> its preset
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each function's figure, the functions taking turns."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            out[k].append(fn())
    return {k: statistics.median(v) for k, v in out.items()}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> Callable[[], float]:
    """A function that times an n x n product in ``dtype`` and returns GFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up

    def run() -> float:
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9

    return run


def train_steps(model_name: str, batch: int, precision: str, steps: int) -> Callable[[], float]:
    """A function that runs ``steps`` training steps as fmnist.training does; ms per step."""
    torch.manual_seed(0)
    cfg = get_preset(PRESET_MODELS[model_name], batch_size=batch)
    model = build_model(cfg).to(memory_format=torch.channels_last).train()
    opt = make_optimizer(cfg, model)
    x = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        xb = to_input(x).contiguous(memory_format=torch.channels_last)
        with autocast(precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()

    def run() -> float:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t) / steps * 1e3

    return run


def inference(model_name: str, precision: str, images: torch.Tensor) -> Callable[[], float]:
    """A function that predicts ``images`` as `fmnist evaluate` does; images per second."""
    torch.manual_seed(0)
    model = build_model(get_preset(PRESET_MODELS[model_name])).eval()
    model = model.to(memory_format=torch.channels_last)
    predict_logits(model, images[:512], precision=precision)  # warm-up

    def run() -> float:
        t = time.perf_counter()
        predict_logits(model, images, precision=precision)
        return len(images) / (time.perf_counter() - t)

    return run


def bench_torch(rounds: int, steps: int) -> None:
    """Matmul peaks, training steps and inference, fp32 against bf16."""
    peaks = interleaved(
        {p: matmul_gflops(d) for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))},
        rounds,
    )
    print(
        f"matmul 2048^2: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s "
        f"({peaks['bf16'] / peaks['fp32']:.2f}x)"
    )
    print("\ntraining step (channels_last, the preset's optimizer), ms per step, median:")
    print(f"{'model':8s} {'batch':>5s} {'fp32':>8s} {'bf16':>8s} {'speed-up':>8s}")
    for name in PRESET_MODELS:
        for batch in (128, 256):
            n = max(2, steps * 128 // batch // (8 if name == "resnet" else 1))
            ms = interleaved({p: train_steps(name, batch, p, n) for p in ("fp32", "bf16")}, rounds)
            print(
                f"{name:8s} {batch:5d} {ms['fp32']:8.1f} {ms['bf16']:8.1f} "
                f"{ms['fp32'] / ms['bf16']:7.2f}x"
            )
    _, (x_test, _) = load_data()
    images = torch.from_numpy(x_test)
    print("\ninference on the 10,000 test images (batches of 256, no TTA), images/s, median:")
    print(f"{'model':8s} {'fp32':>8s} {'bf16':>8s} {'speed-up':>8s}")
    for name in PRESET_MODELS:
        part = images if name != "resnet" else images[:2000]
        ips = interleaved({p: inference(name, p, part) for p in ("fp32", "bf16")}, rounds)
        print(
            f"{name:8s} {ips['fp32']:8,.0f} {ips['bf16']:8,.0f} {ips['bf16'] / ips['fp32']:7.2f}x"
        )


def bench_onnx(run_dir: str, rounds: int) -> None:
    """Export ``run_dir`` in fp32 and int8 (both checked), then time ONNX Runtime on each."""
    from fmnist.export import export
    from fmnist.predict import float_pixels, onnx_session

    _, (x_test, _) = load_data()
    pixels = float_pixels(x_test)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for precision in ("fp32", "int8"):
            r = export(run_dir, Path(tmp) / f"{precision}.onnx", int8=precision == "int8")
            files[precision] = r.path.read_bytes()
            acc = ""
            if r.accuracy is not None:  # the int8 check scores both; the fp32 one compares
                acc = f", test accuracy {r.accuracy:.4f} (PyTorch {r.reference_accuracy:.4f})"
            print(
                f"export {precision}: {r.bytes / 1e6:.2f} MB, {r.label_mismatches} labels "
                f"differ from PyTorch's{acc}"
            )
    for threads in (1, 2):
        sessions = {p: onnx_session(data, threads) for p, data in files.items()}

        def batched(session: Any, batch: int, n: int) -> Callable[[], float]:
            def run() -> float:
                t = time.perf_counter()
                for i in range(0, n, batch):
                    session.run(None, {"pixels": pixels[i : i + batch]})
                return n / (time.perf_counter() - t)

            run()
            return run

        for batch, n in ((1, 2000), (256, 10_000)):
            ips = interleaved({p: batched(s, batch, n) for p, s in sessions.items()}, rounds)
            ratio = ips["int8"] / ips["fp32"]
            print(
                f"ONNX Runtime, {threads} thread(s), batch {batch:3d}: fp32 "
                f"{ips['fp32']:,.0f} images/s, int8 {ips['int8']:,.0f} ({ratio:.2f}x)"
            )


def bench_accuracy(threads: int) -> None:
    """Train the default preset in fp32, then in bf16: test accuracy and training time."""
    for precision in ("fp32", "bf16"):
        cfg = get_preset("default", precision=precision, threads=threads)
        with tempfile.TemporaryDirectory() as tmp:
            run = train(cfg, out=Path(tmp) / "run", quiet=True)
            m = json.loads((run / "metrics.json").read_text())
        print(
            f"default preset, {precision}: test accuracy {m['test_accuracy']:.4f}, training "
            f"{m['train_seconds']:.0f} s ({m['precision']}, {m['threads']} threads)"
        )


def main() -> None:
    """Print the machine, then the figures asked for."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure (5)")
    ap.add_argument("--steps", type=int, default=20, help="training steps per round at batch 128")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--onnx", metavar="RUN_DIR", help="also time ONNX Runtime fp32 vs int8")
    ap.add_argument("--accuracy", action="store_true", help="also train default fp32 and bf16")
    ap.add_argument("--skip-speed", action="store_true", help="no PyTorch speed figures")
    args = ap.parse_args()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", SlowPrecisionWarning)  # bf16 is timed on every CPU
    found = [f for f in FLAGS if f in cpu_flags()]
    print(f"machine: {hardware()}; flags: {' '.join(found) or 'none of ' + ' '.join(FLAGS)}")
    v = versions()
    print(
        f"commit {git_commit()}, torch {v['torch']}, onnxruntime {v.get('onnxruntime')}, "
        f"{torch.get_num_threads()} torch threads"
    )
    if not args.skip_speed:
        bench_torch(args.rounds, args.steps)
    if args.onnx:
        bench_onnx(args.onnx, args.rounds)
    if args.accuracy:
        bench_accuracy(args.threads)


if __name__ == "__main__":
    main()
