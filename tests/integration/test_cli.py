"""The CLI end to end on a small run, and its refusals of bad flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from fmnist import load_data
from fmnist.cli import build_parser, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fmnist", *args], capture_output=True, text=True, timeout=600
    )


def test_train_evaluate_predict_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run("train", "--preset", "seed", "--epochs", "1", "--limit-train", "3000",
            "--out", str(out), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"run directory: {out}" in r.stdout
    assert f"report: {out / 'report.html'}" in r.stdout  # every run ends with its report
    assert b"data:image/png;base64," in (out / "report.html").read_bytes()
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
    r = run("evaluate", str(out), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    fig = tmp_path / "pred.png"
    r = run("predict", str(out), "--index", "0", "--figure", str(fig))
    assert r.returncode == 0, r.stderr
    assert "true Ankle boot" in r.stdout
    probs = [float(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("  ")]
    assert len(probs) == 10 and sum(probs) == pytest.approx(1, abs=1e-3)
    assert fig.read_bytes()[:4] == b"\x89PNG"


def test_runs_latest_points_at_newest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "seed", "--epochs", "1", "--limit-train", "500",
                 "--quiet", "--no-report"]) == 0  # fmt: skip
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and (latest / "metrics.json").exists()
    assert not (latest / "report.html").exists()
    assert latest.resolve().name.endswith("-seed")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "TrainConfig.epochs must be an integer >= 1, got 0"),
        (["--val-split", "1.5"], "TrainConfig.val_split must be a fraction in (0, 1), got 1.5"),
        (["--val-split", "0"], "TrainConfig.val_split must be a fraction in (0, 1), got 0.0"),
        (["--batch-size", "-3"], "TrainConfig.batch_size must be an integer >= 1, got -3"),
        (["--flip", "2"], "TrainConfig.flip must be a probability in [0, 1], got 2.0"),
        (["--device", "gpu"], "TrainConfig.device must be auto | cpu | cuda | cuda:N | mps"),
    ],
)
def test_bad_flag_values_are_refused_by_the_config(flags, message, capsys):
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmnist train: error: ") and message in err
    assert "Traceback" not in err


def test_flags_that_are_no_number_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--lr", "abc"])
    assert e.value.code == 2
    assert "--lr: invalid float value: 'abc'" in capsys.readouterr().err


def test_every_config_field_has_a_flag_with_help():
    import dataclasses

    from fmnist.config import TrainConfig, flags

    table = {f.field: f for f in flags()}
    assert set(table) == {f.name for f in dataclasses.fields(TrainConfig)} - {"preset"}
    parser = build_parser()
    for f in table.values():
        assert len(f.help) > 5, f
        value = {"bool": [], "json": ["{}"]}.get(f.kind, ["1"])
        assert getattr(parser.parse_args(["train", f.option, *value]), f.field) is not None


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    import fmnist.cli

    def broken(args):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(fmnist.cli, "cmd_models", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["models"])


def test_unknown_preset_and_missing_model_are_clear_errors(tmp_path, capsys):
    assert main(["train", "--preset", "nope"]) == 2
    assert "Valid presets" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_data_info_and_show(tmp_path, capsys):
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert out.count("sha256 OK") == 4 and "6000 6000" in out
    png = tmp_path / "grid.png"
    assert main(["show", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "seed" in out and "225,034" in out


def one_error_line(capsys: pytest.CaptureFixture, command: str) -> str:
    """The error line of a refused command: one line, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith(f"fmnist {command}: error: ") and err.count("\n") == 1, err
    return err


def test_output_paths_are_refused_before_the_work(tmp_path, capsys):
    folder = tmp_path / "figures"
    folder.mkdir()
    (tmp_path / "afile").write_text("in the way")
    shoe = tmp_path / "shoe.png"
    Image.fromarray(load_data()[1][0][0]).save(shoe)  # test image 0: an ankle boot
    cases = [
        (["show", "--out", str(tmp_path / "nope" / "x.png")], "the folder", "does not exist"),
        (["show", "--out", str(folder)], "is a folder; expected a file name", "figures/name"),
        (["show", "--out", str(tmp_path / "grid.txt")], "found .txt", "grid.png"),
        (["compare", "run-a", "run-b", "--out", str(tmp_path / "curves.txt")], "found .txt",
         "curves.png"),  # before the runs are looked at
        (["predict", "--index", "0", "--figure", str(tmp_path / "afile" / "p.png")],
         "afile is a file, not a folder", "remove that file"),
        (["show", "--out", ""], "The output path is empty", "such as name.png"),
        (["predict", str(shoe), "--save-preprocessed", str(tmp_path / "afile")],
         "is a file; expected a folder", "remove the file"),
        (["train", "--preset", "seed", "--out", str(tmp_path / "afile" / "run")],
         "Cannot create the folder", "Not a directory"),
    ]  # fmt: skip
    for argv, *parts in cases:
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err.startswith(f"fmnist {argv[0]}: error: ") and err.count("\n") == 1, err
        assert all(p in err for p in parts), err
        assert "test image" not in out  # refused before the prediction
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "figures", "shoe.png"]
    assert not any(folder.iterdir())


def test_a_run_is_never_trained_over_and_a_diverging_one_stops_clearly(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["train", "--preset", "seed", "--epochs", "1", "--limit-train", "500", "--quiet",
            "--no-report"]  # fmt: skip
    assert main([*tiny, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*tiny, "--seed", "1", "--out", str(out)]) == 2
    err = one_error_line(capsys, "train")
    assert f"{out} already holds a run (config.json, model.safetensors" in err
    assert f"Give a new --out, or remove {out} first." in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched

    diverged = tmp_path / "diverged"
    assert main([*tiny, "--lr", "1e10", "--out", str(diverged)]) == 2
    err = one_error_line(capsys, "train")
    assert "The loss became nan in epoch 1 with --lr 1e+10" in err
    assert "with a lower --lr (say 1e+09)" in err
    assert not diverged.exists()  # no NaN weights, and a config alone is no run: all gone

    import fmnist.training  # weights that went NaN in the epoch's last step: validation says

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fmnist.training, "validate", lambda *args: (float("nan"), 0.1))
        assert main([*tiny, "--lr", "0.002", "--schedule", "onecycle", "--out", str(diverged)]) == 2
    assert "The loss became nan in epoch 1 with --lr 0.002" in one_error_line(capsys, "train")
    assert not diverged.exists()

    for kept, advice in [
        (["checkpoint.safetensors"], "It is not whole: remove"),  # no config: no resume
        (["model.safetensors", "model.json"], "It holds a model, not a run"),
    ]:
        folder = tmp_path / f"kept-{len(kept)}"
        folder.mkdir()
        for name in kept:
            (folder / name).write_bytes(b"x")
        assert main(["report", str(folder)]) == 2
        assert advice in one_error_line(capsys, "report")
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "config.json").write_text('{"members": ["runs/a", "runs/b"]}')
    assert main(["compare", str(ens)]) == 2
    assert "make it again with `fmnist ensemble RUN... --out NEW_DIR`" in one_error_line(
        capsys, "compare"
    )


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [("show", "--per-class", "101"), ("serve", "--port", "65536"), ("predict", "--top-k", "11")],
)
def test_flags_with_an_upper_bound_say_it(command, flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, flag, value])
    assert e.value.code == 2
    assert f"argument {flag}: expected " in capsys.readouterr().err


def test_a_device_torch_does_not_have_is_a_clear_error(monkeypatch):
    import torch

    from fmnist.distributed import resolve_device
    from fmnist.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # there: taken as asked
    for name in ("cuda:1", "mps"):
        with pytest.raises(ConfigError, match=f"--device {name}: torch .* sees no such device"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="it has cpu"):
        resolve_device("cuda")


def test_a_damaged_run_leading_predict_is_named_not_read_as_images(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # a run that never finished an epoch
    shoe = tmp_path / "shoe.png"
    Image.fromarray(load_data()[1][0][0]).save(shoe)
    assert main(["predict", str(run), str(shoe)]) == 2
    assert f"Missing model weights {run / 'model.safetensors'}" in one_error_line(capsys, "predict")
    assert main(["train", "--config", str(run)]) == 2
    assert f"Config file {run} is a folder." in one_error_line(capsys, "train")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--index", "0", "--json"], "--json applies to image files; --index N prints"),
        (["--index", "0", "--save-preprocessed", "d", "--min-confidence", "0.5"],
         "--save-preprocessed and --min-confidence apply to image files"),
        (["x.png", "--figure", "f.png"], "--figure draws test image --index N"),
    ],
)  # fmt: skip
def test_predict_flags_the_chosen_form_would_ignore_are_refused(argv, message, capsys):
    assert main(["predict", *argv]) == 2
    assert message in one_error_line(capsys, "predict")
