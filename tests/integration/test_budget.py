"""fmnist train --budget: the epochs come from a timing here and land in config.json."""

from __future__ import annotations

import json

import pytest

from fmnist import budget
from fmnist.cli import main
from fmnist.config import get_preset

TRAIN = ["train", "--preset", "seed", "--limit-train", "640", "--quiet", "--no-report"]


def test_the_timing_is_of_real_steps_of_the_recipe() -> None:
    # One epoch of 16 steps schedules fewer steps than are timed: the timing still runs.
    timing, val_images = budget.time_recipe(get_preset("seed", epochs=1, limit_train=640))
    assert timing.step_seconds > 0 and timing.image_seconds > 0
    assert timing.steps_per_epoch == 16 and val_images == 128  # 512 / 32 and the 0.2 split


@pytest.mark.parametrize("step_seconds, epochs", [(0.004, 3), (0.002, 7)])
def test_slower_steps_train_fewer_epochs_and_config_json_holds_them(
    step_seconds: float, epochs: int, tmp_path, monkeypatch, capsys
) -> None:
    timing = budget.Timing(step_seconds, 1000, 0.0)  # an epoch: 4 s or 2 s
    monkeypatch.setattr(budget, "time_recipe", lambda cfg, data_dir=None: (timing, 128))
    out = tmp_path / "run"
    assert main([*TRAIN, "--budget", "0.3", "--out", str(out)]) == 0  # 14.4 s planned
    assert f"-> {epochs} epochs instead of the recipe's 10" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["epochs"] == epochs
    assert len((out / "history.csv").read_text().splitlines()) == epochs + 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "1", "--epochs", "3"], "both set the epochs"),
        (["--budget", "0"], "positive number of minutes"),
        (["--budget", "0.001"], "does not fit one epoch of preset 'seed'"),
    ],
)
def test_budget_conflicts_and_bad_budgets_are_one_line_errors(
    extra: list[str], message: str, capsys, tmp_path
) -> None:
    assert main([*TRAIN, *extra, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_budget_is_refused_with_resume_and_under_torchrun(tmp_path, monkeypatch, capsys) -> None:
    assert main(["train", "--resume", str(tmp_path), "--budget", "5"]) == 2
    assert "drop ['--budget']" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*TRAIN, "--budget", "5"]) == 2
    assert "under torchrun" in capsys.readouterr().err
