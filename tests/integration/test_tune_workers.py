"""Studies on a real PostgreSQL server and on SQLite, with two workers, one killed (SIGKILL)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pgserver import PG_PASSWORD, free_port
from workers import TINY, TRIALS, kill_one_worker

pytest.importorskip("optuna")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """A fresh study storage: an SQLite file, or a database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("pg_url")


def fmnist(*args: str) -> subprocess.CompletedProcess:
    """The `fmnist` command as a user runs it."""
    cmd = [sys.executable, "-m", "fmnist", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_killed_worker_loses_no_trial_and_duplicates_none(storage, tmp_path):
    from optuna.trial import TrialState

    o = kill_one_worker(storage, tmp_path)
    assert o.survivor_code == 0, o.survivor_output
    by_number = {t.number: t for t in o.trials}
    assert sorted(by_number) == list(range(len(o.trials)))  # numbered without gaps
    dead = by_number[o.dead]
    assert dead.state == TrialState.FAIL and dead.user_attrs["pid"] == o.killed
    # Its parameters rerun once, as a new trial, by the worker that found it silent.
    (retry,) = o.retries()
    assert retry.system_attrs["failed_trial"] == o.dead and retry.params == dead.params
    assert retry.user_attrs["pid"] == o.survivor and retry.number > o.dead
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    # The survivor ran all its trials; the dead worker's finished ones are kept as they were.
    pids = [t.user_attrs["pid"] for t in o.trials]
    assert pids.count(o.survivor) == TRIALS
    assert pids.count(o.killed) == len(o.trials) - TRIALS
    for t in o.trials:
        if t.number != o.dead:
            assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t
        assert t.user_attrs["run_dir"] == str(o.out / f"trial-{t.number}")
    assert o.lost() == 0 and o.duplicated() == 0
    # The best value is the best finished trial's, as its run directory recorded it.
    done = [t for t in o.trials if t.state == TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value)
    metrics = json.loads((o.out / f"trial-{best.number}" / "metrics.json").read_text())
    assert best.value == metrics["best_val_accuracy"]
    assert f"best: trial {best.number}, validation accuracy {best.value:.4f}" in o.survivor_output
    saved = json.loads((o.out / "best_config.json").read_text())
    assert saved == json.loads((o.out / f"trial-{best.number}" / "config.json").read_text())


@pytest.mark.slow
def test_the_readme_postgresql_command_runs_a_study(pg_url, tmp_path):
    """README: fmnist tune ... --storage postgresql://fmnist:secret@HOST/DB --study NAME."""
    import optuna

    from fmnist.storage import storage_url

    (tmp_path / "tiny.json").write_text(json.dumps({**TINY, "epochs": 1}))
    flags = ["--config", str(tmp_path / "tiny.json"), "--storage", pg_url,
             "--study", "fashion-default", "--out", str(tmp_path / "runs")]  # fmt: skip
    done = fmnist("tune", *flags, "--trials", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert PG_PASSWORD not in done.stdout  # the URL is printed with its password hidden
    assert "postgresql://fmnist:***@127.0.0.1" in done.stdout
    study = optuna.load_study(study_name="fashion-default", storage=storage_url(pg_url))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    # The study remembers its fixed settings on the server and refuses others.
    done = fmnist("tune", *flags, "--trials", "1", "--epochs", "2")
    assert done.returncode == 2
    assert "was started with different settings" in done.stderr
    assert "epochs 1 (study) vs 2 (now)" in done.stderr
    assert (
        len(optuna.load_study(study_name="fashion-default", storage=storage_url(pg_url)).trials)
        == 2
    )


def test_a_wrong_password_names_the_host_and_the_cause(postgres, capsys):
    from fmnist.cli import main

    url = postgres.url(postgres.create_database(), password="wrong")
    assert main(["tune", "--preset", "seed", "--trials", "1", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert f"on host 127.0.0.1 port {postgres.port}" in err
    assert 'password authentication failed for user "fmnist"' in err
    assert "wrong" not in err  # the password itself is never printed


def test_an_unreachable_server_names_the_host_and_the_cause(capsys):
    pytest.importorskip("psycopg")
    from fmnist.cli import main

    port = free_port()  # nothing listens there
    url = f"postgresql://fmnist:{PG_PASSWORD}@127.0.0.1:{port}/studies"
    assert main(["tune", "--preset", "seed", "--trials", "1", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"on host 127.0.0.1 port {port}" in err
    assert "Connection refused" in err and "that the server runs" in err


def test_heartbeat_is_a_positive_whole_number_of_seconds(capsys):
    from fmnist.cli import main

    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit):
            main(["tune", "--preset", "seed", "--trials", "1", "--heartbeat", bad])
        assert "--heartbeat: expected an integer >= 1" in capsys.readouterr().err
