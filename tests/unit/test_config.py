"""TrainConfig's checks, presets, config files and the flag table derived from it."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re

import pytest

from fmnist.cli import build_parser, positive_float, positive_int
from fmnist.config import PRESETS, TrainConfig, command_flags, flags, get_preset, load_config
from fmnist.errors import ConfigError, FmnistError


def test_every_field_but_preset_is_a_flag_with_its_comment_as_help():
    table = {f.field: f for f in flags()}
    assert set(table) == {f.name for f in dataclasses.fields(TrainConfig)} - {"preset"}
    assert table["batch_size"].option == "--batch-size"
    assert table["batch_size"].help.startswith("images per optimisation step")
    assert {table[n].kind for n in ("epochs", "lr", "tta", "model_args", "limit_train")} == {
        "int", "float", "bool", "json"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seed": -1}, "TrainConfig.seed must be an integer >= 0, got -1"),
        ({"threads": -2}, "TrainConfig.threads must be an integer >= 0"),
        ({"lr": float("inf")}, "TrainConfig.lr must be a positive finite number, got inf"),
        ({"translate": 14}, "TrainConfig.translate must be an integer in [0, 13]"),
        ({"photo": 1.5}, "TrainConfig.photo must be a probability in [0, 1], got 1.5"),
        ({"device": "tpu"}, "TrainConfig.device must be auto | cpu | cuda | cuda:N | mps"),
        ({"label_smoothing": 1.0}, "TrainConfig.label_smoothing must be in [0, 1)"),
        ({"weight_decay": float("inf")}, "weight_decay must be finite and >= 0, got inf"),
    ],
)
def test_bad_values_are_config_errors_that_say_what_was_expected(overrides, message):
    with pytest.raises(ConfigError) as e:
        get_preset("default", **overrides)
    assert message in str(e.value)
    assert isinstance(e.value, FmnistError) and not isinstance(e.value, ValueError)


def test_command_flags_reproduce_the_config_from_its_preset():
    cfg = get_preset("default", epochs=3, tta=False, model_args={"widths": [8, 16, 32]})
    args = command_flags(dataclasses.asdict(cfg))
    assert args == ["--preset", "default", "--model-args", '{"widths": [8, 16, 32]}',
                    "--epochs", "3", "--no-tta"]  # fmt: skip
    assert command_flags({**dataclasses.asdict(cfg), "preset": "mine"}) is None
    assert command_flags(dataclasses.asdict(PRESETS["seed"])) == ["--preset", "seed"]


def test_another_model_drops_the_presets_model_args_and_model_args_replace_them(tmp_path):
    wide = PRESETS["photo"].model_args
    assert wide and get_preset("photo", model="fast").model_args == wide
    assert get_preset("photo", model="resnet").model_args == {}  # not widths for a ResNet
    assert get_preset("photo", model_args={"dropout": 0.1}).model_args == {"dropout": 0.1}
    cfg = get_preset("photo", model="seed", model_args={"hidden": 32})
    assert (cfg.model, cfg.model_args) == ("seed", {"hidden": 32})
    flags_ = command_flags(dataclasses.asdict(get_preset("photo", model="resnet")))
    assert flags_ == ["--preset", "photo", "--model", "resnet", "--model-args", "{}"]
    f = tmp_path / "photo.json"
    f.write_text(json.dumps(dataclasses.asdict(PRESETS["photo"])))
    assert load_config(f).model_args == wide
    assert load_config(f, model="resnet").model_args == {}


def test_config_files_fill_in_from_their_preset(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"preset": "best", "epochs": 2, "lr": 1}))
    cfg = load_config(f, seed=4)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.seed) == ("resnet", 2, 1.0, 4)
    assert isinstance(cfg.lr, float)
    f.write_text("[1]")
    with pytest.raises(ConfigError, match="holds a JSON array, not an object"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")


def test_quick_is_the_default_recipe_for_two_epochs_without_shifts():
    quick, default = dataclasses.asdict(PRESETS["quick"]), dataclasses.asdict(PRESETS["default"])
    assert {k for k in quick if quick[k] != default[k]} == {"preset", "epochs", "translate"}
    assert (quick["epochs"], quick["translate"]) == (2, 0)


def test_threads_beyond_four_per_core_run_capped_with_a_warning():
    """A config from a bigger machine still trains and resumes here (1000 threads hung 2)."""
    import torch

    from fmnist.system import torch_settings

    cap = 4 * (os.cpu_count() or 1)
    assert get_preset("seed", threads=cap + 1).threads == cap + 1  # the config keeps it
    warned = pytest.warns(UserWarning, match=f"{cap + 1} threads asked .* using {cap}")
    with warned, torch_settings(cap + 1):
        assert torch.get_num_threads() == cap


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "-1"])
def test_positive_number_flags_refuse_what_is_not_a_finite_positive_number(text):
    """`serve --timeout nan` started, then answered every upload with a 500."""
    with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number > 0"):
        positive_float(text)
    assert positive_float("2.5") == 2.5
    assert positive_int("1" + "0" * 400) == 10**400  # no OverflowError from math.isfinite


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "expected a JSON object, e.g. '{\"dropout\": 0.2}', got '[1]'"),
        ('"x"', "expected a JSON object"),
        ("{widths: 1}", "expected JSON, e.g."),
        ('{"num_classes": 3}', "num_classes cannot be set: the data fixes them"),
        ('{"input_shape": [3, 28, 28]}', "input_shape cannot be set"),
    ],
)
def test_model_args_flags_must_be_an_object_without_what_the_data_fixes(text, message):
    """--model-args '[1]' or '{"num_classes": 3}' ended in a traceback, the latter in the loss."""
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        build_parser().parse_args(["train", "--model-args", text])
    assert message in err.getvalue()


@pytest.mark.parametrize("command", [["train"], ["tune"], ["ensemble", "a", "b"]])
def test_an_empty_out_folder_is_refused_not_taken_for_the_default(command):
    """`--out ''` wrote to runs/<time>-<preset> as if no --out had been given."""
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        build_parser().parse_args([*command, "--out", ""])
    assert "argument --out: expected a folder path, got an empty one" in err.getvalue()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": "3"}, 'epochs must be an integer, found "3" (string)'),
        ({"epochs": 2.5}, "epochs must be an integer, found 2.5"),
        ({"threads": True}, "threads must be an integer, found true"),
        ({"tta": "yes"}, 'tta must be true or false, found "yes"'),
        ({"model_args": "x"}, 'model_args must be an object, found "x"'),
    ],
)
def test_the_python_api_checks_types_as_config_files_are_checked(overrides, message):
    """get_preset("default", epochs="3") raised a TypeError from a comparison; 2.5 passed."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_preset("default", **overrides)
