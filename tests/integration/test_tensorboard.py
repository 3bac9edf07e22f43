"""--tensorboard: the event files hold the run's scalars, hparams and figures."""

from __future__ import annotations

import sys

import pytest

from fmnist import tboard
from fmnist.cli import main
from fmnist.config import ConfigError, get_preset
from fmnist.errors import RunDirError
from fmnist.rundir import Run
from fmnist.training import train

TINY = ["--preset", "seed", "--model-args", '{"width": 8, "hidden": 32}', "--limit-train",
        "600", "--threads", "1", "--epochs", "2", "--quiet", "--no-report"]  # fmt: skip


def test_a_run_writes_its_scalars_hparams_and_figures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", *TINY, "--tensorboard", "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    history = Run(out).history()
    for column, tag in (("train_loss", "loss/train"), ("val_accuracy", "accuracy/validation"),
                        ("lr", "learning_rate"), ("seconds", "seconds_per_epoch")):  # fmt: skip
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [1, 2]
        assert [e.value for e in scalars] == pytest.approx([r[column] for r in history])
    assert {"test/confusion_matrix", "test/mistakes"} <= set(tags["images"])
    # add_hparams writes the settings and the test metrics beside them
    hp = EventAccumulator(str(out / "tensorboard"))
    hp.Reload()
    test_acc = Run(out).metrics()["test_accuracy"]
    assert hp.Scalars("hparam/test_accuracy")[0].value == pytest.approx(test_acc)


def test_a_missing_package_is_one_clear_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    cfg = get_preset("seed", epochs=1, limit_train=200, tensorboard=True)
    with pytest.raises(ConfigError, match=r'pip install "fmnist\[tensorboard\]"'):
        train(cfg, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()  # nothing loaded, nothing written


def test_an_unwritable_tensorboard_folder_is_refused_before_the_first_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("a file where the folder goes")
    cfg = get_preset("seed", epochs=1, limit_train=200, tensorboard=True)
    with pytest.raises(RunDirError, match=r"already holds files \(tensorboard\)"):
        train(cfg, out=out, quiet=True)  # a new run takes a new or empty folder only
    assert not (out / "history.csv").exists()  # no epoch was trained
    with pytest.raises(ConfigError, match="--tensorboard cannot write") as e:
        tboard.open_writer(out)  # what train checks before its first epoch
    assert "give another --out" in str(e.value)


def test_every_trial_of_a_study_writes_its_own_log(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("optuna")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    url = f"sqlite:///{tmp_path / 'study.db'}"
    flags = [f for f in TINY if f != "--no-report"]  # a study writes no reports
    code = main(["tune", *flags, "--tensorboard", "--search", "lr", "--storage", url,
                 "--out", str(tmp_path / "runs"), "--trials", "2"])  # fmt: skip
    assert code == 0
    for trial in ("trial-0", "trial-1"):
        events = EventAccumulator(str(tmp_path / "runs" / trial / "tensorboard"))
        events.Reload()
        history = Run(tmp_path / "runs" / trial).history()
        scalars = events.Scalars("accuracy/validation")
        assert [e.value for e in scalars] == pytest.approx([r["val_accuracy"] for r in history])
