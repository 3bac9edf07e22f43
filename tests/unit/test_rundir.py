"""The run directory type: kinds, states, files written atomically, clear refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fmnist.errors import DiskFullError, OutputError, RunDirError, TrainingInterrupted
from fmnist.rundir import FILES, LOCK, STATE, Run, atomic_write_bytes, provenance
from fmnist.runlock import hold


def test_create_names_runs_by_time_and_preset_and_never_reuses_one(tmp_path):
    a, b = Run.create("seed", tmp_path), Run.create("seed", tmp_path)
    assert a.path != b.path and a.path.name.endswith("-seed") and b.path.is_dir()
    b.point_latest()
    assert (tmp_path / "latest").resolve() == b.path.resolve()


def test_history_config_and_metrics_round_trip(tmp_path):
    run = Run(tmp_path)
    rows = [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.4,
             "val_accuracy": 0.85, "lr": 1e-3, "seconds": 2.0, "elapsed_seconds": 2.0}]  # fmt: skip
    run.write_history(rows)
    run.write_config({"preset": "seed"})
    assert run.history() == rows and run.kind == "run" and not run.finished
    recorded = {"test_accuracy": 0.9, "train_seconds": 12.5, "params": 1000, "epochs": 2}
    run.write_metrics(recorded)
    assert run.finished and run.metrics() == recorded
    for damage in ({}, {"test_accuracy": "high"}, {"epochs": 2.5}, {"params": True}):
        (tmp_path / "metrics.json").write_text(json.dumps({**recorded, **damage} if damage else {}))
        with pytest.raises(RunDirError, match=r"metrics.json is damaged: .* Train the run again"):
            run.metrics()  # compare and report failed on these with a TypeError or KeyError
    run.write_metrics(recorded)
    run.write_config({"preset": "ensemble", "members": ["a", "b"]})
    assert run.kind == "ensemble"


def test_an_interrupted_run_is_refused_with_the_resume_command(tmp_path):
    run = Run(tmp_path)
    run.write_config({"preset": "seed"})
    (tmp_path / STATE).write_bytes(b"x")
    with pytest.raises(RunDirError) as e:
        run.require_finished()
    assert f"fmnist train --resume {tmp_path}" in str(e.value)
    assert all(name in str(e.value) for name in FILES if name != "config.json")
    assert run.require_resumable() is run
    with pytest.raises(RunDirError, match="is not a directory"):
        Run(tmp_path / "nope").require_finished()
    with pytest.raises(RunDirError, match="not a run directory"):
        Run(tmp_path / "nope").require_resumable()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_bytes(path, b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(DiskFullError) as e:
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.json"]
    assert f"No space left on the device to write {path} (3 bytes; " in str(e.value)
    assert "free on its filesystem" in str(e.value) and e.value.path == path
    assert "run the command again" in str(e.value)


def test_a_run_directory_has_one_writer(tmp_path):
    with hold(tmp_path / "run") as run:
        lock = run / LOCK
        assert f"pid {os.getpid()} on " in lock.read_text()
        with pytest.raises(RunDirError) as e, hold(run):
            pass  # never reached: the second writer is refused at once
        assert f"{run} is in use: another fmnist process (pid {os.getpid()}" in str(e.value)
        assert "give another --out" in str(e.value)
    assert not lock.exists()  # released and removed
    assert not run.exists()  # made for the run and left empty (a refused run): removed
    run.mkdir()
    lock.write_text("pid 1 on a machine that died\n")  # a stale lock: its process is gone
    with hold(run):
        assert str(os.getpid()) in lock.read_text()
    assert run.is_dir() and not lock.exists()  # it was there before: kept


def test_a_full_disk_in_a_held_run_says_how_to_resume(tmp_path):
    with pytest.raises(DiskFullError, match="run the command again"), hold(tmp_path) as run:
        raise DiskFullError(run / "config.json", 10, 0, "run the command again")
    (tmp_path / STATE).write_bytes(b"x")  # an epoch is saved: resume it
    with pytest.raises(DiskFullError) as e, hold(tmp_path) as run:
        raise DiskFullError(run / "history.csv", 10, 0, "run the command again")
    assert f"continue with: fmnist train --resume {tmp_path}" in str(e.value)


def test_a_folder_gone_read_only_in_a_held_run_says_how_to_resume(tmp_path, monkeypatch):
    (tmp_path / STATE).write_bytes(b"x")  # an epoch is saved
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(30, "Read-only")))
    with pytest.raises(OutputError) as e, hold(tmp_path) as run:
        atomic_write_bytes(run / "history.csv", b"epoch\n")
    assert f"Cannot write {tmp_path / 'history.csv'}: Read-only." in str(e.value)
    assert f"continue with: fmnist train --resume {tmp_path}" in str(e.value)


def test_provenance_names_the_machine_and_the_versions():
    p = provenance("cpu", "fmnist train")
    assert p["command"] == "fmnist train" and p["hardware"] and "numpy" in p["versions"]


def test_the_commit_stamp_is_dirty_unless_only_the_excluded_folder_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real repository: system.git_commit runs git where its module lies."""
    import subprocess

    from fmnist import system

    pkg = tmp_path / "src" / "pkg"
    (pkg / "bundled").mkdir(parents=True)
    (pkg / "code.py").write_text("a = 1\n")
    (pkg / "bundled" / "model.json").write_text("{}\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    monkeypatch.setattr(system, "__file__", str(pkg / "system.py"))
    commit = system.git_commit()
    assert commit and not commit.endswith("+dirty")
    (pkg / "bundled" / "model.json").write_text('{"rescored": true}\n')
    assert system.git_commit() == commit + "+dirty"
    assert system.git_commit(exclude="src/pkg/bundled") == commit
    (pkg / "code.py").write_text("a = 2\n")
    assert system.git_commit(exclude="src/pkg/bundled") == commit + "+dirty"


def test_a_new_run_is_refused_in_a_folder_of_other_files_and_leaves_them(tmp_path):
    """`--out .` in a project, or a folder of notes: a run's README.md would replace theirs."""
    (tmp_path / "README.md").write_text("my notes\n")
    with pytest.raises(RunDirError) as e, hold(tmp_path, new_run=True):
        pass  # never reached
    assert f"{tmp_path} already holds files (README.md)" in str(e.value)
    assert "new or empty folder as --out" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["README.md"]
    assert (tmp_path / "README.md").read_text() == "my notes\n"
    with hold(tmp_path / "empty", new_run=True) as run:  # a new or empty folder is taken
        assert os.listdir(run) == [LOCK]


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError, DiskFullError])
def test_a_new_run_that_ends_before_its_first_epoch_leaves_nothing(tmp_path, error):
    """Ctrl-C (or an error) in epoch 1 left config.json alone: the same command was then
    refused (a run is there) and --resume too (no epoch saved). A saved epoch stays."""
    out = tmp_path / "run"
    with pytest.raises(error), hold(out, new_run=True) as run:
        (run / "config.json").write_text("{}")
        (run / "tensorboard").mkdir()  # --tensorboard opens its log before epoch 1
        (run / "tensorboard" / "events").write_text("")
        raise error(run / "x", 1, 0, "fix") if error is DiskFullError else error()
    assert not out.exists()  # made for the run, left empty: removed
    out.mkdir()  # a folder that was there before, empty: kept, and empty again
    with pytest.raises(error), hold(out, new_run=True) as run:
        (run / "config.json").write_text("{}")
        raise error(run / "x", 1, 0, "fix") if error is DiskFullError else error()
    assert out.is_dir() and os.listdir(out) == []
    out.rmdir()
    with pytest.raises(KeyboardInterrupt), hold(out, new_run=True) as run:
        (run / "config.json").write_text("{}")
        (run / STATE).write_bytes(b"x")  # epoch 1 saved: resumable
        raise KeyboardInterrupt
    assert sorted(os.listdir(out)) == [STATE, "config.json"]
    (out / STATE).unlink()
    with pytest.raises(KeyboardInterrupt), hold(out) as run:  # --resume deletes nothing
        raise KeyboardInterrupt
    assert os.listdir(out) == ["config.json"]
    assert "nothing was saved. Run the same command again" in str(TrainingInterrupted(out, 0))
    assert f"Resume with: fmnist train --resume {out}" in str(TrainingInterrupted(out, 1))
