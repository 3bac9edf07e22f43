"""The CLI end to end on a small run, and its refusals of bad flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fmnist.cli import main


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
        (["--epochs", "0"], "expected an integer >= 1"),
        (["--val-split", "1.5"], "expected a number in (0, 1)"),
        (["--val-split", "0"], "expected a number in (0, 1)"),
        (["--batch-size", "-3"], "expected an integer >= 1"),
        (["--lr", "abc"], "expected a number > 0"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


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
