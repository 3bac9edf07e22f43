"""The CLI end to end on a small run, and its refusals of bad flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
