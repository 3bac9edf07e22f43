"""Full disks and shared directories: a real tmpfs that fills up, two `fmnist train --out DIR`."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist.checkpoint import load_model, load_state
from fmnist.rundir import HISTORY, LOCK, STATE, Run

pytestmark = pytest.mark.slow  # trains real (tiny) models in subprocesses

# A seed CNN of width 8 on 480 training images: well under a second an epoch.
TINY = ["--preset", "seed", "--model-args", '{"width": 8, "hidden": 32}', "--limit-train", "600",
        "--threads", "1", "--quiet"]  # fmt: skip
# Runs `fmnist ARGS...`, filling the disk for real (a file written until the filesystem
# refuses) just before the NTH write of the run's file TARGET: the ENOSPC that follows is
# the kernel's, at a moment the test chooses.
FILL_THEN_RUN = """
import errno, sys, tempfile
target, nth, filler = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real, seen = tempfile.mkstemp, []
def fill():
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"x" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
def mkstemp(*args, prefix="", **kwargs):
    if prefix == f".{target}.":
        seen.append(prefix)
        if len(seen) == nth:
            fill()
    return real(*args, prefix=prefix, **kwargs)
tempfile.mkstemp = mkstemp
from fmnist.cli import main
sys.exit(main(sys.argv[4:]))
"""


def fmnist(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmnist", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def fill_then_run(target: str, nth: int, filler: Path, *argv: str) -> subprocess.CompletedProcess:
    """`fmnist ARGV`, the disk filled by ``filler`` before the ``nth`` write of ``target``."""
    cmd = [sys.executable, "-c", FILL_THEN_RUN, target, str(nth), str(filler), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB tmpfs of the test's own, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root (mount -t tmpfs)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)]).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)])


def assert_complete(run: Path) -> None:
    """Every file of ``run`` is a complete one; no temporary file is left behind."""
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    for p in run.iterdir():
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            from PIL import Image

            Image.open(p).verify()
    with open(run / HISTORY) as f:
        rows = list(csv.DictReader(f))
    assert rows and all(None not in r.values() for r in rows)
    load_state(run / STATE)
    load_model(run)


@pytest.mark.parametrize(
    ("target", "nth", "saved_epoch", "history_rows"),
    [
        ("checkpoint.safetensors", 2, 1, 1),  # epoch 2's state: epoch 1's stays
        ("history.csv", 2, 2, 1),  # epoch 2's state is saved, the history still has epoch 1
        ("accuracy.png", 1, 3, 3),  # the finish: the curves of the finished run
    ],
    ids=["checkpoint.safetensors", "history.csv", "accuracy.png"],  # RELIABILITY.md's ids
)
def test_a_full_disk_stops_the_run_clearly_and_resume_finishes_it(
    small_disk, target, nth, saved_epoch, history_rows
):
    run, filler = small_disk / "run", small_disk / "filler"
    argv = ["train", *TINY, "--epochs", "3", "--out", str(run), "--no-report"]
    done = fill_then_run(target, nth, filler, *argv)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err  # one line
    assert err.startswith(f"fmnist train: error: No space left on the device to write {run}/")
    assert f"{target} (" in err and " free on its filesystem" in err
    assert f"continue with: fmnist train --resume {run}" in err
    assert_complete(run)
    assert load_state(run / STATE)[1]["epoch"] == saved_epoch
    with open(run / HISTORY) as f:
        assert len(list(csv.DictReader(f))) == history_rows
    assert not (run / "metrics.json").exists()  # not finished: resumable
    filler.unlink()  # space freed
    done = fmnist("train", "--resume", str(run), "--quiet", "--no-report")
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3
    assert_complete(run)


def test_a_full_disk_while_writing_the_report_leaves_the_run_finished(small_disk):
    run, filler = small_disk / "run", small_disk / "filler"
    argv = ["train", *TINY, "--epochs", "1", "--out", str(run)]
    # The report's first file: the run is finished by then, the report not yet begun.
    done = fill_then_run("evaluation.json", 1, filler, *argv)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert "\n" not in err and f"to write {run}/evaluation.json (" in err
    assert f"write the run's report with: fmnist report {run}" in err
    assert_complete(run)
    assert not (run / "evaluation.json").exists()
    Run(run).require_finished()  # the run itself is whole: `fmnist report` can take it


def test_a_run_on_a_full_disk_stops_before_it_trains(small_disk):
    run = small_disk / "run"
    with open(small_disk / "filler", "wb", buffering=0) as f:  # the disk full from the start
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"x" * size)
    assert shutil.disk_usage(small_disk).free < 4096
    done = fmnist("train", *TINY, "--epochs", "1", "--out", str(run), "--no-report")
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert err.startswith(f"fmnist train: error: No space left on the device to write {run}/")
    assert "\n" not in err and "free some space and run the command again" in err
    assert not run.exists()  # nothing half-written, no lock left: the empty directory is gone


def test_a_second_writer_is_refused_and_a_killed_runs_lock_blocks_no_resume(tmp_path):
    run = tmp_path / "run"
    longer = [*TINY, "--epochs", "5000"]  # killed long before its end (an epoch: ~0.1 s)
    first = start("train", *longer, "--out", str(run), "--no-report")
    try:
        wait_for_state(run, first)  # it has trained an epoch, and holds the directory
        t0 = time.monotonic()
        second = fmnist("train", *TINY, "--epochs", "3", "--out", str(run), "--no-report")
        assert second.returncode == 2
        assert time.monotonic() - t0 < 60  # refused before loading anything
        assert second.stderr.startswith(f"fmnist train: error: {run} is in use: another fmnist "
                                        f"process (pid {first.pid} on ")  # fmt: skip
        assert second.stderr.count("\n") == 1
        resumed = fmnist("train", "--resume", str(run), "--quiet", "--no-report")
        assert resumed.returncode == 2 and "is in use" in resumed.stderr  # nor a resume
        assert first.poll() is None, "the first run ended before the test could kill it"
    finally:
        first.kill()  # SIGKILL: no chance to clean up
        first.wait()
    assert json.loads((run / "config.json").read_text())["epochs"] == 5000  # the first's own
    assert (run / LOCK).is_file()  # the killed run's lock file is left, its lock is not
    epoch = load_state(run / STATE)[1]["epoch"]
    resumed = start("train", "--resume", str(run), "--quiet", "--no-report")
    try:  # the resume takes the directory and trains on
        deadline = time.monotonic() + 120
        while load_epoch(run) <= epoch:
            assert resumed.poll() is None, resumed.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert f"pid {resumed.pid} on " in (run / LOCK).read_text()
        resumed.send_signal(signal.SIGINT)  # Ctrl-C: it stops cleanly, and lets go
        _, err = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait()
    assert resumed.returncode == 130 and f"Resume with: fmnist train --resume {run}" in err
    assert not (run / LOCK).exists()


def start(*args: str) -> subprocess.Popen:
    """`fmnist ARGS` in the background, taking Ctrl-C even when pytest itself was started in
    the background (a shell's `cmd &` ignores SIGINT, and children inherit that)."""
    return subprocess.Popen([sys.executable, "-m", "fmnist", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=take_ctrl_c)  # fmt: skip


def take_ctrl_c() -> None:
    """In the child before exec: SIGINT back to its default, so Python raises Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load_epoch(run: Path) -> int:
    """The last epoch saved in the run's training state (0 before the first)."""
    try:
        return load_state(run / STATE)[1]["epoch"]
    except Exception:  # not written yet
        return 0


def wait_for_state(run: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while load_epoch(run) == 0:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
