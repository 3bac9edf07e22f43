"""The models that ship in the package: they score what they record, and predict with no run."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fmnist import bundled
from fmnist.checkpoint import load_model
from fmnist.cli import main
from fmnist.evaluation import score_test
from fmnist.images import to_png
from fmnist.predict import (
    Classifier,
    float_pixels,
    model_precision,
    onnx_session,
    run_onnx,
    softmax,
)
from fmnist.rundir import META, ONNX, read_json

NAMES = bundled.names()


def test_there_is_a_bundled_model_and_they_stay_small():
    assert "default" in NAMES
    assert sum(bundled.describe(n)["bytes"] for n in NAMES) < 5e6


@pytest.mark.parametrize("name", NAMES)
def test_recorded_test_accuracy_matches_a_fresh_evaluation(name, fashion):
    folder = bundled.path(name)
    meta = read_json(folder / META)
    model, _ = load_model(folder)
    precision = model_precision(meta)  # fp32: it was trained before precision was recorded
    fresh = score_test(model, tta=bool(meta["tta"]), test=fashion[1], precision=precision)
    assert fresh.metrics["accuracy"] == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-9)
    onnx = softmax(run_onnx(onnx_session(folder / ONNX), float_pixels(fashion[1][0])))
    assert (onnx.argmax(1) == fresh.predictions).all()  # the export serves the same labels
    thresholds = np.array(meta["min_confidence"])  # one per class, fitted by tools/bundle.py
    assert thresholds.shape == (10,) and ((thresholds > 0) & (thresholds < 1)).all()
    assert meta["bundle"]["provenance"]["commit"] and "quantile" in meta["bundle"]["unsure_rule"]
    offsets = np.array(meta["photo_offsets"])  # per class, for segmented photos
    assert offsets.shape == (10,) and (np.abs(offsets) <= 2).all()  # tools/bundle.py's BOUND
    assert len(meta["bundle"]["photo_offsets_rule"]["in_class_right"]["out_of_fold"]) == 3
    # Without torch (and in fmnist serve) the ONNX file is what loads: the same rule.
    onnx = Classifier.load(folder / ONNX)
    np.testing.assert_array_equal(onnx.min_confidence, thresholds)
    np.testing.assert_array_equal(onnx.photo_offsets, offsets)
    # Fitted on shift-averaged answers (tools/bundle.py), and served that way from both files.
    assert meta["photo_shifts"] is True and onnx.photo_shifts is True
    assert Classifier.load(folder).photo_shifts is True


def test_predict_needs_no_run(fashion, tmp_path, capsys):
    clf = Classifier.load()  # no path: the preferred bundled model
    np.testing.assert_array_equal(
        clf.min_confidence, read_json(bundled.path() / META)["min_confidence"]
    )
    x, y = fashion[1][0][:200], fashion[1][1][:200]
    assert (clf.predict(x).class_index == y).mean() > 0.85
    png = tmp_path / "boot.png"
    png.write_bytes(to_png(x[0]))
    assert main(["predict", str(png), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == "Ankle boot" and record["unsure"] is False
    assert main(["predict", str(png), "--model", "default"]) == 0
    assert main(["predict", str(png), "--model", "nope"]) == 2
    assert "No bundled model 'nope'" in capsys.readouterr().err


def test_models_lists_the_bundled_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        acc = bundled.describe(name)["test_accuracy"]
        assert any(line.startswith(name) and f"{acc:.4f}" in line for line in out.splitlines())


def test_the_wheel_carries_the_bundled_models(tmp_path):
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(root)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("fmnist-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in NAMES:
        for f in ("model.safetensors", "model.json", "model.onnx", "README.md"):
            assert f"fmnist/models_bundled/{name}/{f}" in names
    # ...and the package loads them from where it is installed, not from the source tree:
    # -S skips site's .pth files, so the editable install's finder cannot point at src/.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    purelib = sysconfig.get_paths()["purelib"]  # numpy, onnxruntime, ...
    code = "\n".join([
        f"import sys; sys.path[:0] = [{str(target)!r}, {purelib!r}]",
        "import numpy as np, fmnist.bundled as b",
        "from fmnist.predict import Classifier",
        f"assert str(b.path()).startswith({str(target)!r}), b.path()",
        "clf = Classifier.load(b.path() / 'model.onnx')",
        "print(clf.predict(np.zeros((1, 28, 28), np.uint8)).label[0])",
    ])  # fmt: skip
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in bundled_classes()


def bundled_classes() -> list[str]:
    return read_json(bundled.path() / META)["classes"]
