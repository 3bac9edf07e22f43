"""Training: config validation, a real short run that learns, and the run directory."""

from __future__ import annotations

import json

import pytest
import torch

from fmnist.checkpoint import load_model
from fmnist.config import PRESETS, TrainConfig, get_preset
from fmnist.data import load_data, split_indices
from fmnist.errors import ConfigError
from fmnist.evaluation import loss_accuracy, predict_logits
from fmnist.rundir import Run
from fmnist.training import train


def test_seed_preset_is_the_notebook_recipe():
    cfg = PRESETS["seed"]
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == (
        "seed", "adam", 1e-3, 32, 10,
    )  # fmt: skip
    assert cfg.val_split == 0.2 and not cfg.normalize and cfg.schedule == "constant"
    assert cfg.flip == cfg.translate == cfg.erase == cfg.label_smoothing == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", 0), ("val_split", 0.0), ("val_split", 1.0),
     ("optimizer", "rmsprop"), ("schedule", "step")],
)  # fmt: skip
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_unknown_preset_and_keys_are_listed():
    with pytest.raises(ConfigError, match="Valid presets: seed"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="Unknown config keys"):
        TrainConfig.from_dict({"epochz": 3})


def test_short_real_run_learns_and_writes_the_run_directory(small_run):
    names = {p.name for p in small_run.iterdir()}
    assert {
        "config.json", "history.csv", "metrics.json", "model.safetensors", "model.json",
        "accuracy.png", "loss.png",
    } <= names  # fmt: skip
    metrics = json.loads((small_run / "metrics.json").read_text())
    for key in (
        "test_accuracy", "test_loss", "best_val_accuracy", "best_epoch", "epochs",
        "train_seconds", "model", "params", "seed", "device", "torch_version",
    ):  # fmt: skip
        assert key in metrics
    assert metrics["best_val_accuracy"] >= 0.70  # the seed recipe learns in one short epoch
    assert metrics["params"] == 225_034 and metrics["train_images"] == 10_000
    history = Run(small_run).history()
    assert len(history) == 1 and history[0]["val_accuracy"] == metrics["best_val_accuracy"]
    cfg = TrainConfig.from_dict(json.loads((small_run / "config.json").read_text()))
    assert cfg.limit_train == 12_500
    for png in ("accuracy.png", "loss.png"):
        assert (small_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_preset_learns_in_one_epoch_on_10000_images(tmp_path):
    cfg = get_preset("default", epochs=1, limit_train=12_500, val_split=0.2, batch_size=32)
    run = train(cfg, out=tmp_path / "run", quiet=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == 10_000
    assert metrics["best_val_accuracy"] >= 0.80
    assert metrics["test_accuracy"] >= 0.80
    # Calibrated on the validation split: the stored temperature lowers its loss.
    model, meta = load_model(run)
    temperature = meta["normalization"]["temperature"]
    assert temperature == metrics["temperature"] == pytest.approx(float(model.temperature))
    assert temperature != 1.0
    (x, y), _ = load_data()
    _, va = split_indices(len(x[:12_500]), 0.2, cfg.seed)
    logits = predict_logits(model, torch.from_numpy(x[va]), tta=True)
    calibrated, _ = loss_accuracy(logits, torch.from_numpy(y[va]))
    uncalibrated, _ = loss_accuracy(logits * temperature, torch.from_numpy(y[va]))
    assert calibrated < uncalibrated


def test_a_run_gives_back_the_callers_torch_settings(tmp_path):
    det = torch.utils.deterministic
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              det.fill_uninitialized_memory)  # fmt: skip
    threads = 1 if before[0] != 1 else 2
    cfg = get_preset("seed", epochs=1, limit_train=600, threads=threads,
                     model_args={"width": 8, "hidden": 32})  # fmt: skip
    run = train(cfg, out=tmp_path / "run", quiet=True)
    assert json.loads((run / "metrics.json").read_text())["threads"] == threads  # in force
    after = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             det.fill_uninitialized_memory)  # fmt: skip
    assert after == before
