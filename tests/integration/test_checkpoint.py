"""Model files: round trip to identical logits, and clear errors for bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fmnist.checkpoint import CheckpointError, load_model, save_model
from fmnist.config import get_preset
from fmnist.training import build_model


def test_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = build_model(get_preset("seed")).eval()
    save_model(tmp_path, model, {"model": "seed", "model_args": {}, "classes": list("abcdefghij"),
                                 "normalization": {"mean": 0.0, "std": 1.0}})  # fmt: skip
    loaded, meta = load_model(tmp_path)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["classes"] == list("abcdefghij")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_weights_that_are_not_numbers_are_refused(tmp_path):
    """A diverged training's NaN weights: a clear error at load, not NaN answers."""
    model = build_model(get_preset("seed")).eval()
    with torch.no_grad():
        model.net.classifier[-1].bias[3] = float("nan")
    save_model(tmp_path, model, {"model": "seed", "model_args": {}, "classes": list("abcdefghij"),
                                 "normalization": {"mean": 0.0, "std": 1.0}})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"not numbers .* \['net.classifier.4.bias'\]"):
        load_model(tmp_path)


def test_bad_model_files_give_clear_errors(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    weights = run / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(run)
    weights.write_bytes(good)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "model": "vgg"}))
    with pytest.raises(CheckpointError, match="Unknown model 'vgg'"):
        load_model(run)
    (run / "model.json").write_text(json.dumps({**meta, "model_args": {"hidden": 64}}))
    with pytest.raises(CheckpointError, match="wrong shapes .* keep the two files of one run"):
        load_model(run)
    (run / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON .* edited by hand; retrain"):
        load_model(run)
    (run / "model.json").write_text('{"name": "something else"}')
    with pytest.raises(CheckpointError, match="not an fmnist model"):
        load_model(run)
    weights.unlink()
    with pytest.raises(CheckpointError, match="fmnist train"):
        load_model(run)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", 5, "'model' must be a model name, found 5"),
        ("model_args", [1], "'model_args' must be an object of constructor arguments"),
        ("classes", "abc", "'classes' must be a list of 10 class names, found 'abc'"),
        ("classes", ["a", "b"], "'classes' must be a list of 10 class names"),
        ("normalization", {"mean": "x", "std": 1.0}, "'normalization' must be an object with"),
        ("normalization", {"mean": 0.0, "std": 0}, "finite numbers mean, std > 0"),
        ("normalization", {"mean": 0.0, "std": 1.0, "temperature": 0}, "(and temperature > 0)"),
        ("tta", "yes", "'tta' must be true or false, found 'yes'"),
        ("format_version", 99, "has format_version 99; this fmnist reads versions up to 1"),
    ],
)
def test_a_hand_edited_model_description_is_refused_field_by_field(tmp_path, field, value, message):
    model = build_model(get_preset("seed")).eval()
    norm = {"mean": 0.0, "std": 1.0}
    save_model(tmp_path, model, {"model": "seed", "model_args": {}, "classes": list("abcdefghij"),
                                 "normalization": norm, "tta": False})  # fmt: skip
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps(meta | {field: value}))
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path)
    assert message in str(e.value)
    assert "edited by hand; retrain" in str(e.value) or "Upgrade fmnist" in str(e.value)


def test_a_newer_format_is_said_before_its_fields_are_checked(tmp_path):
    model = build_model(get_preset("seed")).eval()
    save_model(tmp_path, model, {"model": "seed", "model_args": {}, "classes": list("abcdefghij"),
                                 "normalization": {"mean": 0.0, "std": 1.0}})  # fmt: skip
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["normalization"]  # as a later format might rename a field
    (tmp_path / "model.json").write_text(json.dumps(meta | {"format_version": 2}))
    with pytest.raises(CheckpointError, match="format_version 2; .* Upgrade fmnist"):
        load_model(tmp_path)


def test_a_runs_other_json_or_an_onnx_file_is_named_for_what_it_is(tmp_path):
    """`fmnist export RUN/config.json` said "Missing model weights RUN/config.safetensors",
    and `fmnist evaluate model.onnx` that it was no model."""
    from fmnist.checkpoint import resolve

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=f"give the run directory {tmp_path} "):
        resolve(tmp_path / "config.json")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is an ONNX model, which this command does not"):
        resolve(tmp_path / "model.onnx")
