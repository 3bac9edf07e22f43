"""bf16 and fp32 training: both learn, reruns repeat exactly, resume crosses precisions,
and evaluation and Classifier follow the precision a model was trained with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from fmnist import system
from fmnist.checkpoint import load_model
from fmnist.cli import main
from fmnist.config import get_preset
from fmnist.evaluation import score_test
from fmnist.predict import Classifier
from fmnist.rundir import STATE, Run
from fmnist.system import bf16_is_fast
from fmnist.training import resume_run, train

# A small fast CNN with batch norm, one-cycle AdamW and augmentation: seconds per run. One
# thread: two threads' OpenMP barriers make it 20x slower when other jobs share the cores.
CONFIG = dict(
    epochs=2, limit_train=3000, val_split=0.2, batch_size=64, eval_batch_size=500,
    model_args={"widths": [8, 16, 32], "hidden": 32}, tta=False, threads=1,
)  # fmt: skip
pytestmark = pytest.mark.filterwarnings("ignore::fmnist.system.SlowPrecisionWarning")


def run_twice(tmp_path_factory, precision: str):
    cfg = get_preset("default", precision=precision, **CONFIG)
    root = tmp_path_factory.mktemp(precision)
    return [train(cfg, out=root / name, quiet=True) for name in ("a", "b")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list]:
    """Two fp32 runs and two bf16 runs of the same config."""
    return {p: run_twice(tmp_path_factory, p) for p in ("fp32", "bf16")}


def history(run) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in Run(run).history()]


def float_dtypes(path) -> set[str]:
    """The floating-point dtypes of the tensors in a safetensors file (F32, BF16, ...)."""
    with safe_open(str(path), "pt") as f:
        found = {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    return found - {"I64", "U8", "BOOL"}  # batch counts, RNG states


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_precision_learns_repeats_exactly_and_saves_fp32(runs, precision):
    a, b = runs[precision]
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["precision"] == precision
    assert json.loads((a / "config.json").read_text())["precision"] == precision
    assert metrics["test_accuracy"] > 0.6 and metrics["best_val_accuracy"] > 0.6  # chance: 0.1
    assert history(a) == history(b)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert float_dtypes(a / "model.safetensors") == float_dtypes(a / STATE) == {"F32"}


def test_bf16_really_computes_in_bf16(runs):
    fp32, bf16 = runs["fp32"][0], runs["bf16"][0]
    assert history(fp32)[0]["train_loss"] != history(bf16)[0]["train_loss"]
    acc = [json.loads((r / "metrics.json").read_text())["test_accuracy"] for r in (fp32, bf16)]
    assert abs(acc[0] - acc[1]) < 0.05  # the same recipe, within noise of each other


def test_classifier_and_evaluate_follow_the_recorded_precision(runs, fashion, capsys):
    fp32, bf16 = runs["fp32"][0], runs["bf16"][0]
    assert Classifier.load(fp32).precision == "fp32"
    clf = Classifier.load(bf16)
    assert clf.precision == "bf16" and "precision='bf16'" in repr(clf)
    x = fashion[1][0][:2000]
    p16 = clf.predict(x).probabilities
    p32 = Classifier.load(bf16, precision="fp32").predict(x).probabilities
    assert 1e-6 < np.abs(p16 - p32).max() < 0.2
    assert (p16.argmax(1) == p32.argmax(1)).mean() > 0.97
    # fmnist evaluate repeats the test accuracy training recorded, in its precision.
    metrics = json.loads((bf16 / "metrics.json").read_text())
    assert main(["evaluate", str(bf16), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"] == "bf16" and out["test_accuracy"] == metrics["test_accuracy"]
    assert main(["evaluate", str(bf16), "--json", "--precision", "fp32"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
    model, _ = load_model(fp32)
    assert (
        score_test(model, precision="fp32").metrics["accuracy"]
        == json.loads((fp32 / "metrics.json").read_text())["test_accuracy"]
    )


class Stop(Exception):
    """Stops a run after its first epoch, as a lost machine would."""


def stop_after_first_epoch(row: dict) -> None:
    if row["epoch"] == 1:
        raise Stop


def test_auto_resumes_in_another_precision(runs, tmp_path, monkeypatch):
    """An `auto` run started on an AVX2-only CPU (fp32), resumed on a bf16 one."""
    cfg = get_preset("default", **CONFIG)  # precision: auto
    monkeypatch.setattr(system, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(Stop):
        train(cfg, out=tmp_path / "run", quiet=True, on_epoch=stop_after_first_epoch)
    assert history(tmp_path / "run") == history(runs["fp32"][0])[:1]  # epoch 1 ran in fp32
    monkeypatch.setattr(system, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    run = resume_run(tmp_path / "run", quiet=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["resumed"] is True
    assert json.loads((run / "config.json").read_text())["precision"] == "auto"
    rows = history(run)
    assert len(rows) == 2 and rows[0] == history(runs["fp32"][0])[0]
    assert rows[1] != history(runs["fp32"][0])[1]  # epoch 2 ran in bf16
    assert metrics["test_accuracy"] > 0.6 and float_dtypes(run / "model.safetensors") == {"F32"}


def test_auto_uses_what_this_machine_has(tmp_path):
    cfg = get_preset("seed", epochs=1, limit_train=1000, model_args={"width": 8, "hidden": 32},
                     threads=1)  # fmt: skip
    run = train(cfg, out=tmp_path / "run", quiet=True)
    expected = "bf16" if bf16_is_fast("cpu") else "fp32"
    assert json.loads((run / "metrics.json").read_text())["precision"] == expected
