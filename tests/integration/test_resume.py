"""Runs that survive: kill -9 mid-epoch or mid-write, Ctrl-C, then resume to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist.checkpoint import load_state
from fmnist.rundir import STATE, Run

pytestmark = pytest.mark.slow  # trains real models for tens of seconds

# Every stateful part in play: dropout, batch norm, augmentation RNG, EMA, one-cycle, AdamW.
CONFIG = dict(
    epochs=3, limit_train=6000, batch_size=64, val_split=0.2, ema=0.99,
    erase=0.5, eval_batch_size=500, model_args={"widths": [8, 16, 32], "hidden": 32},
)  # fmt: skip
SCRIPT = """
import json, sys
from fmnist.config import get_preset
from fmnist.training import resume_run, train

cfg = get_preset("default", **json.loads(sys.argv[2]))
if sys.argv[1] == "train-pausing":  # epoch 2's state stays a temporary file for 60 s
    import os, time
    replace, states = os.replace, []
    def slow_replace(src, dst):
        if str(dst).endswith("checkpoint.safetensors"):
            states.append(dst)
            if len(states) == 2:
                time.sleep(60)
        replace(src, dst)
    os.replace = slow_replace
if sys.argv[1] == "resume":
    resume_run(sys.argv[3], quiet=True)
else:
    train(cfg, out=sys.argv[3], quiet=True)
"""
TIME_COLUMNS = ("seconds", "elapsed_seconds")


def start(mode: str, out: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode, json.dumps(CONFIG), str(out)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def state_epoch(run: Path) -> int:
    try:
        return load_state(run / STATE)[1]["epoch"]
    except Exception:
        return 0


def comparable(run: Path) -> tuple[list, dict]:
    """History without timings and metrics without timings or provenance."""
    history = [
        {k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in Run(run).history()
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("train_seconds", "resumed", "commit"):
        metrics.pop(key)
    return history, metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    finish(start("train", out))
    return out


def test_two_identical_runs_are_identical(reference, tmp_path):
    finish(start("train", tmp_path / "again"))
    assert comparable(tmp_path / "again") == comparable(reference)
    weights = (reference / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == weights


def test_sigkill_mid_epoch_then_resume_gives_the_same_result(reference, tmp_path):
    run = tmp_path / "run"
    proc = start("train", run)
    wait_for(lambda: state_epoch(run) >= 1)
    proc.send_signal(signal.SIGKILL)  # now somewhere inside epoch 2
    proc.wait(timeout=30)
    epochs_done = state_epoch(run)
    assert 1 <= epochs_done < CONFIG["epochs"]
    assert not (run / "metrics.json").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist", "train", "--resume", str(run), "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert comparable(run) == comparable(reference)
    assert json.loads((run / "metrics.json").read_text())["resumed"] is True


def test_sigkill_during_state_write_keeps_the_previous_state(reference, tmp_path):
    run = tmp_path / "run"
    # Epoch 2's state is written but not yet renamed into place; we kill it right there.
    proc = start("train-pausing", run)
    # Epoch 1's state is complete first, so the temporary file seen next is epoch 2's.
    wait_for(lambda: state_epoch(run) >= 1 and any(run.glob(f".{STATE}.*")))
    torn = next(run.glob(f".{STATE}.*"))
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert torn.exists()  # the temporary file is left, never renamed into place
    _, info = load_state(run / STATE)
    assert info["epoch"] == 1
    finish(start("resume", run))
    assert comparable(run) == comparable(reference)


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmnist", "train", "--preset", "seed", "--epochs", "3",
         "--limit-train", "12500", "--out", str(run), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even under `cmd &`
    )  # fmt: skip
    wait_for(lambda: state_epoch(run) >= 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"Resume with: fmnist train --resume {run}" in err
    r = subprocess.run(
        [sys.executable, "-m", "fmnist", "train", "--resume", str(run), "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(Run(run).history()) == 3


def test_resume_refuses_flags_and_finished_runs(reference, tmp_path, capsys):
    from fmnist.cli import main

    assert main(["train", "--resume", str(reference), "--epochs", "5"]) == 2
    assert "drop ['--epochs']" in capsys.readouterr().err
    assert main(["train", "--resume", str(reference)]) == 2
    assert "already complete" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_resume_checks_a_hand_edited_config_as_config_files_are_checked(
    reference, tmp_path, capsys
):
    """A config.json edited before --resume ended in a TypeError, or in a RuntimeError of
    load_state_dict when it named another model than the saved state's."""
    import shutil

    from fmnist.cli import main

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "metrics.json").unlink()  # an unfinished run: resumable
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "epochs": "x"}))
    assert main(["train", "--resume", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert 'has values of the wrong type: epochs must be an integer, found "x"' in err
    wider = {**saved, "model_args": {"widths": [16, 16, 32], "hidden": 32}}
    (run / "config.json").write_text(json.dumps(wider))
    assert main(["train", "--resume", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "The saved training state does not fit the model and recipe that config.json" in err
    assert "Traceback" not in err and (run / STATE).is_file()
    (run / "config.json").write_text(json.dumps(saved))
    (run / STATE).write_bytes((run / STATE).read_bytes()[:100])  # damaged: no way to resume
    assert main(["train", "--resume", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "so the run cannot be resumed. Train it anew: `fmnist train --config" in err
