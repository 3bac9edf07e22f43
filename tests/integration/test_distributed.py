"""Data-parallel training with torchrun: two gloo processes on the CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pgserver import free_port

from fmnist.config import get_preset
from fmnist.distributed import Dist
from fmnist.errors import ConfigError
from fmnist.training import epoch_seed, train

pytestmark = pytest.mark.slow  # trains real models for tens of seconds


def test_two_process_run_matches_single_process_of_same_effective_batch(tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    port = free_port()  # for the rendezvous
    r = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "fmnist",
         "train", "--preset", "seed", "--epochs", "1", "--limit-train", "12500",
         "--batch-size", "32", "--lr", "0.0005", "--scale-lr", "linear",
         "--out", str(out), "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run directory:") == 1  # only rank 0 reports
    ddp = json.loads((out / "metrics.json").read_text())
    assert ddp["processes"] == 2 and ddp["effective_batch_size"] == 64
    assert ddp["ranks_identical"] is True
    # --lr as given in config.json (a rerun scales it once); the optimiser ran it doubled.
    assert json.loads((out / "config.json").read_text())["lr"] == 0.0005
    with open(out / "history.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["lr"]) == pytest.approx(0.001)
    single_dir = train(
        get_preset("seed", epochs=1, limit_train=12_500, batch_size=64),
        out=tmp_path / "single", quiet=True,
    )  # fmt: skip
    single = json.loads((single_dir / "metrics.json").read_text())
    assert single["processes"] == 1
    assert ddp["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=0.03)
    assert ddp["test_accuracy"] > 0.70


def test_single_process_dist_is_a_no_op():
    import torch

    d = Dist()
    t = torch.tensor([1.0, 2.0])
    assert d.main and d.sum(t) is t and t.tolist() == [1.0, 2.0]
    assert d.identical(torch.nn.Linear(2, 2))


def test_epoch_seeds_differ_by_every_key():
    seeds = {epoch_seed(0, e, s, r) for e in range(3) for s in range(3) for r in range(2)}
    assert len(seeds) == 18 and all(0 <= x < 2**63 for x in seeds)


def test_sync_bn_on_cpu_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import torch

    import fmnist.training as train_module

    # As rank 0 of a two-process CPU job; the refusal comes before any collective call.
    monkeypatch.setattr(
        train_module, "init_distributed", lambda device: (Dist(0, 2), torch.device("cpu"))
    )
    cfg = get_preset("seed", epochs=1, limit_train=200, sync_bn=True)
    with pytest.raises(ConfigError, match="sync_bn needs GPUs"):
        train(cfg, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
