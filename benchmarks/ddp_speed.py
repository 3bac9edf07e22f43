"""Data-parallel speed-up with torchrun: N processes against one, at the same effective batch.

    python benchmarks/ddp_speed.py [--preset seed] [--epochs 2] [--batch-size 64] [--procs 2]

Trains the preset twice in subprocesses: once as one process using all cores' threads, and
once under `torchrun --nproc-per-node N` (gloo on the CPU) with one thread per process and
batch-size / N per process, so both take the same optimisation steps. Prints seconds per
epoch, test accuracy and the speed-up. On one machine the processes share its cores, so
this measures the cost of DistributedDataParallel against intra-op threading; across
machines or GPUs each process brings its own hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from fmnist.rundir import Run
from fmnist.system import git_commit, hardware


def run(cmd: list[str], out: Path, env: dict[str, str]) -> dict:
    """Run one training command; return its metrics and mean seconds per epoch."""
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    seconds = [row["seconds"] for row in Run(out).history()]
    return {**metrics, "seconds_per_epoch": sum(seconds) / len(seconds)}


def main() -> None:
    """Run both trainings and print the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="seed")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="effective (all processes)")
    p.add_argument("--procs", type=int, default=2)
    args = p.parse_args()
    if args.batch_size % args.procs:
        sys.exit("--batch-size must be a multiple of --procs")
    threads = torch.get_num_threads()
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    flags = ["--preset", args.preset, "--epochs", str(args.epochs), "--quiet", "--no-report"]
    print(f"hardware: {hardware()}; commit {git_commit()}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        single = run(
            [sys.executable, "-m", "fmnist", "train", *flags,
             "--batch-size", str(args.batch_size), "--out", f"{tmp}/single"],
            Path(tmp) / "single", {},
        )  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ddp = run(
            [torchrun, "--nproc-per-node", str(args.procs), "--master-addr", "127.0.0.1",
             "--master-port", str(port), "-m", "fmnist", "train", *flags,
             "--batch-size", str(args.batch_size // args.procs), "--out", f"{tmp}/ddp"],
            Path(tmp) / "ddp", {"OMP_NUM_THREADS": str(max(1, threads // args.procs))},
        )  # fmt: skip
    print(f"{args.preset}, {args.epochs} epochs, effective batch {args.batch_size}:")
    for name, m in (("1 process", single), (f"{args.procs} processes (torchrun)", ddp)):
        print(
            f"  {name:24s} {m['seconds_per_epoch']:6.1f} s/epoch  "
            f"test accuracy {m['test_accuracy']:.4f}"
        )
    print(f"  speed-up: {single['seconds_per_epoch'] / ddp['seconds_per_epoch']:.2f}x")


if __name__ == "__main__":
    main()
