"""--patience: a run whose validation accuracy stops improving ends early, with its best epoch."""

from __future__ import annotations

import pytest

from fmnist.cli import main
from fmnist.config import ConfigError, get_preset
from fmnist.rundir import META, Run, read_json

# A tiny seed CNN whose learning rate is too small to change anything: validation accuracy
# stays where the first epoch left it, so no later epoch improves on epoch 1.
FLAT = ["--preset", "seed", "--model-args", '{"width": 8, "hidden": 32}', "--limit-train",
        "600", "--threads", "1", "--lr", "1e-12", "--epochs", "10", "--quiet",
        "--no-report"]  # fmt: skip


def test_a_flat_run_stops_after_patience_epochs_and_keeps_the_best(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FLAT, "--patience", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    run = Run(out)
    m = run.metrics()
    assert m["epochs"] == 10 and m["epochs_trained"] == 3 and m["best_epoch"] == 1
    assert m["stopped_early"].startswith("validation accuracy did not improve for 2 epochs")
    assert [row["epoch"] for row in run.history()] == [1, 2, 3]
    assert read_json(out / META)["epoch"] == 1  # the weights kept are the best epoch's
    assert "stopped after epoch 3: validation accuracy did not improve" in printed
    assert run.config()["patience"] == 2  # a rerun of config.json stops the same way


def test_without_patience_the_run_goes_to_its_last_epoch(tmp_path):
    out = tmp_path / "run"
    flat = [a if a != "10" else "3" for a in FLAT]
    assert main(["train", *flat, "--out", str(out)]) == 0
    m = Run(out).metrics()
    assert m["epochs_trained"] == 3 and m["stopped_early"] is None


def test_patience_is_a_whole_number_of_epochs(capsys):
    with pytest.raises(ConfigError, match="patience"):
        get_preset("seed", patience=-1)
    with pytest.raises(SystemExit):
        main(["train", "--patience", "x"])
    assert "--patience" in capsys.readouterr().err
