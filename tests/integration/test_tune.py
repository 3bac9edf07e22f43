"""`fmnist tune` (Optuna studies over tiny runs) and `fmnist train --config FILE`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import subprocess
import sys
import time

import pytest

from fmnist.cli import build_parser, main
from fmnist.cli.workflow import config_from_args

pytestmark = pytest.mark.slow  # trains real models for tens of seconds

# A seed CNN narrowed to width 8 and 2 epochs on 480 training images: about a second a trial.
TINY = {
    "preset": "seed",
    "model_args": {"width": 8, "hidden": 32},
    "epochs": 2,
    "limit_train": 600,
    "threads": 1,  # the machine is shared: one thread is faster than two fighting
}


def run_main(*args: str) -> tuple[int, str]:
    """main(args) with its standard output captured."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(args))
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 3-trial study whose third trial (a learning rate of 1e-7) must be pruned."""
    optuna = pytest.importorskip("optuna")
    d = tmp_path_factory.mktemp("study")
    tiny = d / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    url = f"sqlite:///{d / 'study.db'}"
    # The first two trials learn; the third cannot (lr 1e-7 stays at chance), so the median
    # rule, active after PRUNE_STARTUP_TRIALS=2 finished trials, must stop it after epoch 1.
    s = optuna.create_study(storage=url, study_name="tiny", direction="maximize")
    for lr in (3e-3, 2e-3, 1e-7):
        s.enqueue_trial({"lr": lr})
    flags = ["--config", str(tiny), "--storage", url, "--study", "tiny", "--out", str(d / "runs")]
    with pytest.warns(UserWarning, match="out of range"):  # 1e-7 is below the lr range
        code, out = run_main("tune", *flags, "--search", "lr", "--trials", "3", "--quiet")
    assert code == 0
    return {"dir": d, "url": url, "flags": flags, "out": out, "tiny": tiny}


def load(url: str):
    import optuna

    return optuna.load_study(study_name="tiny", storage=url)


def test_study_completes_prunes_and_saves_the_best(study):
    from optuna.trial import TrialState

    trials = load(study["url"]).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert [t.params for t in trials] == [{"lr": 3e-3}, {"lr": 2e-3}, {"lr": 1e-7}]
    runs = study["dir"] / "runs"
    for t in trials:  # every trial is a run directory, recorded in the study
        assert t.user_attrs["run_dir"] == str(runs / f"trial-{t.number}")
        cfg = json.loads((runs / f"trial-{t.number}" / "config.json").read_text())
        assert cfg["lr"] == t.params["lr"] and cfg["model_args"] == TINY["model_args"]
    for t in trials[:2]:
        metrics = json.loads((runs / f"trial-{t.number}" / "metrics.json").read_text())
        assert t.value == metrics["best_val_accuracy"]
        assert sorted(t.intermediate_values) == [1, 2]
    # The pruned trial stopped after epoch 1 and left a resumable, unfinished run.
    pruned = runs / "trial-2"
    assert trials[2].user_attrs["pruned_after_epoch"] == 1
    assert not (pruned / "metrics.json").exists()
    with open(pruned / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 1
    assert run_main("train", "--resume", str(pruned), "--quiet", "--no-report")[0] == 0
    assert json.loads((pruned / "metrics.json").read_text())["epochs"] == 2
    # The table, the best trial and its config file.
    lines = study["out"].splitlines()
    assert lines[0].split() == ["trial", "state", "val_acc", "epochs", "params"]
    assert lines[3].split()[:2] == ["2", "PRUNED"] and "lr=1e-07" in lines[3]
    best = max(trials[:2], key=lambda t: t.value)
    assert f"best: trial {best.number}, validation accuracy {best.value:.4f}" in study["out"]
    best_cfg = json.loads((runs / "best_config.json").read_text())
    assert best_cfg == json.loads((runs / f"trial-{best.number}" / "config.json").read_text())


def test_running_again_extends_the_study(study):
    before = load(study["url"]).trials
    code, out = run_main("tune", *study["flags"], "--search", "lr", "--trials", "1", "--quiet")
    assert code == 0
    after = load(study["url"]).trials
    assert len(after) == 4 and after[3].number == 3
    for old, new in zip(before, after[:3], strict=True):  # earlier trials are kept as they were
        assert (old.state, old.params, old.value) == (new.state, new.params, new.value)
    assert (study["dir"] / "runs" / "trial-3" / "config.json").is_file()
    assert len(out.splitlines()) == 1 + 4 + 2  # header, four trials, best and its config


def test_a_dead_workers_trial_is_failed_and_retried(tmp_path):
    """kill -9 mid-trial: the next worker marks the silent trial failed and reruns it."""
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    (tmp_path / "tiny.json").write_text(json.dumps({**TINY, "epochs": 8}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    flags = ["--config", str(tmp_path / "tiny.json"), "--storage", url, "--study", "tiny",
             "--out", str(tmp_path / "runs"), "--search", "lr", "--trials", "1",
             "--heartbeat", "1"]  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-m", "fmnist", "tune", *flags, "--quiet"])
    first_epoch = tmp_path / "runs" / "trial-0" / "history.csv"  # written after epoch 1
    deadline = time.monotonic() + 120
    while not first_epoch.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.kill()  # SIGKILL: no chance to tell the storage
    assert worker.wait() == -signal.SIGKILL, "the trial ended before it could be killed"
    study = optuna.load_study(study_name="tiny", storage=url)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]  # the dead trial

    # The dead worker's last heartbeat must be older than 3 beats of 1 s when the next worker
    # looks; SQLite keeps whole seconds, so 3.5 s can read as 3 (seen once): wait 5.
    time.sleep(5)
    assert run_main("tune", *flags, "--quiet")[0] == 0
    dead, retry = optuna.load_study(study_name="tiny", storage=url).trials
    assert dead.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == dead.params and retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["run_dir"] == str(tmp_path / "runs" / "trial-1")
    assert (tmp_path / "runs" / "trial-1" / "metrics.json").is_file()


def test_a_study_refuses_different_fixed_settings(study, capsys):
    assert main(["tune", *study["flags"], "--search", "lr", "--trials", "1", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "was started with different settings" in err and "epochs 2 (study) vs 3 (now)" in err
    assert "new --study name" in err
    # A new study must not write into an old study's trial directories.
    flags = [*study["flags"][:5], "fresh", *study["flags"][6:]]  # --study fresh
    assert main(["tune", *flags, "--search", "lr", "--trials", "1"]) == 2
    assert "trial-0 exists, but study 'fresh' has only 0 trial(s)" in capsys.readouterr().err


def test_fixed_flags_are_not_sampled(tmp_path):
    pytest.importorskip("optuna")
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({**TINY, "epochs": 1}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code, _ = run_main("tune", "--config", str(tiny), "--storage", url, "--study", "tiny",
                       "--out", str(tmp_path / "runs"), "--trials", "1", "--quiet",
                       "--batch-size", "64", "--lr", "0.002")  # fmt: skip
    assert code == 0
    (trial,) = load(url).trials
    # The rest of the default space is sampled, dropout into model_args (the seed CNN has it).
    assert set(trial.params) == {"optimizer", "weight_decay", "label_smoothing", "flip",
                                 "translate", "erase", "ema", "dropout"}  # fmt: skip
    cfg = json.loads((tmp_path / "runs" / "trial-0" / "config.json").read_text())
    assert (cfg["batch_size"], cfg["lr"], cfg["epochs"]) == (64, 0.002, 1)
    assert cfg["model_args"] == {**TINY["model_args"], "dropout": trial.params["dropout"]}
    assert cfg["optimizer"] == trial.params["optimizer"]
    assert (tmp_path / "runs" / "best_config.json").is_file()


def test_best_config_trains_with_train_config(study, tmp_path):
    best = study["dir"] / "runs" / "best_config.json"
    out = tmp_path / "run"
    code, stdout = run_main("train", "--config", str(best), "--out", str(out), "--quiet",
                            "--no-report")  # fmt: skip
    assert code == 0 and f"run directory: {out}" in stdout
    assert json.loads((out / "config.json").read_text()) == json.loads(best.read_text())
    # Flags override the file; everything else comes from it.
    args = build_parser().parse_args(["train", "--config", str(best), "--epochs", "5"])
    assert config_from_args(args).__dict__ == {**json.loads(best.read_text()), "epochs": 5}


def test_a_partial_config_starts_from_its_preset(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"preset": "best", "epochs": 3, "lr": 1}))
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(f)]))
    assert (cfg.model, cfg.epochs, cfg.erase, cfg.lr) == ("resnet", 3, 0.5, 1.0)
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist. Expected a JSON object of TrainConfig fields"),
        ("{'epochs': 2}", "is not valid JSON (Expecting property name"),
        ("[1, 2]", "holds a JSON array, not an object"),
        ('{"epochs": 2, "lr_rate": 0.1}', "unknown keys ['lr_rate']; valid keys: ["),
        ('{"epochs": "ten"}', 'epochs must be an integer, found "ten" (string)'),
        ('{"normalize": 1}', "normalize must be true or false, found 1 (number)"),
        ('{"limit_train": 2.5}', "limit_train must be an integer or null, found 2.5"),
        ('{"model_args": [8]}', "model_args must be an object, found [8] (array)"),
        ('{"epochs": 0}', "TrainConfig.epochs must be an integer >= 1, got 0"),
    ],
)
def test_bad_config_files_are_clear_errors(content, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "config.json"
    if content is not None:
        f.write_text(content)
    assert main(["train", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fmnist train: error: Config file {f}")
    assert message in err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_config_conflicts_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # were a check missing, nothing would be written elsewhere
    f = tmp_path / "c.json"
    f.write_text("{}")
    for preset in ("seed", "default"):  # the default preset, named, conflicts too
        assert main(["train", "--config", str(f), "--preset", preset]) == 2
        assert "give one of them" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", str(f)]) == 2
    assert "drop ['--config']" in capsys.readouterr().err
    assert main(["tune", "--trials", "1", "--preset", "seed", "--search", "lr,momentum"]) == 2
    assert "Unknown search names ['momentum']" in capsys.readouterr().err
    assert main(["tune", "--trials", "1", "--preset", "seed", "--search", ""]) == 2
    assert "Unknown search names ['']; the search space has: " in capsys.readouterr().err
    assert main(["tune", "--trials", "1", "--preset", "seed", "--search", "lr", "--lr", "1"]) == 2
    assert "--lr fixes lr for every trial" in capsys.readouterr().err


def test_bad_storage_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("optuna")
    assert main(["tune", "--trials", "1", "--preset", "seed", "--storage", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "Cannot open the study storage 'nonsense'" in err and "sqlite:///study.db" in err
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    url = f"sqlite:///{tmp_path / 'notes.txt'}"
    assert main(["tune", "--trials", "1", "--preset", "seed", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes.txt'} is not an SQLite database" in err
    assert "Fix: name a new file" in err and "[SQL:" not in err
    assert (tmp_path / "notes.txt").read_text() == "not a database\n" * 100
    url = f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
    assert main(["tune", "--trials", "1", "--preset", "seed", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert f"Its folder {tmp_path / 'missing'} does not exist: create it first" in err
    db = tmp_path / "t.db"  # --out in the way: refused before the study holds a failed trial
    out = ["--out", str(tmp_path / "notes.txt"), "--storage", f"sqlite:///{db}"]
    assert main(["tune", "--trials", "1", "--preset", "seed", *out]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in err and not db.exists()


def test_missing_optuna_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now fails
    assert main(["tune", "--trials", "1", "--preset", "seed"]) == 2
    assert "pip install 'fmnist[tune]'" in capsys.readouterr().err


def test_a_diverging_trial_is_pruned_and_the_study_goes_on(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    s = optuna.create_study(storage=url, study_name="tiny", direction="maximize")
    for lr in (1e10, 3e-3):  # the first diverges in its first epoch (was fatal to the study)
        s.enqueue_trial({"lr": lr})
    flags = ["--config", str(tiny), "--storage", url, "--study", "tiny"]
    with pytest.warns(UserWarning, match="out of range"):  # 1e10 is above the lr range
        code, _ = run_main("tune", *flags, "--out", str(tmp_path / "runs"), "--search", "lr",
                           "--trials", "2", "--quiet")  # fmt: skip
    assert code == 0
    trials = load(url).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[0].user_attrs["diverged_in_epoch"] == 1
