"""int8 export: quantised and checked on the test set, taken by Classifier and the server."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

from fmnist import bundled
from fmnist import export as export_module
from fmnist.cli import main
from fmnist.export import INT8_FILE, ExportError, export
from fmnist.images import to_png
from fmnist.predict import Classifier
from fmnist.serve import create_app

pytestmark = pytest.mark.slow  # each export scores the 10,000 test images twice


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    """The bundled default model (test accuracy 0.93) in a run directory, exported with
    `fmnist export RUN --int8`; returns the directory and what the command printed."""
    run = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(bundled.path("default"), run)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(run), "--int8"]) == 0
    return run, printed.getvalue()


def test_cli_writes_a_quantised_model_that_passes_the_check(int8_run):
    run, printed = int8_run
    path = run / INT8_FILE
    assert f"wrote {path}" in printed and "int8 ONNX on 10,000 test images" in printed
    found = re.search(
        r"images: ([\d.]+)% of labels .* accuracy ([\d.]+) \(PyTorch ([\d.]+)\)", printed
    )
    agree, acc, ref = (float(v) for v in found.groups())
    assert agree >= 99.5 and ref - acc <= 0.003 and acc > 0.92
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights  # the convolution and dense weights are stored as int8
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["precision"] == "int8" and json.loads(props["classes"])[0] == "T-shirt/top"
    assert props["tta"] == "true"  # flip-TTA stays inside the graph


def test_classifier_and_server_take_the_int8_model(int8_run, fashion):
    run, _ = int8_run
    clf = Classifier.load(run / INT8_FILE)
    assert clf.backend == "onnx" and clf.precision == "int8" and clf.tta
    (x, y) = fashion[1][0][:1000], fashion[1][1][:1000]
    ref = Classifier.load(run, precision="fp32").predict(x)
    got = clf.predict(x)
    assert (got.class_index == ref.class_index).mean() >= 0.99
    assert (got.class_index == y).mean() > 0.9
    with pytest.raises(Exception, match="exported in int8; it cannot compute in bf16"):
        Classifier.load(run / INT8_FILE, precision="bf16")
    with TestClient(create_app(clf)) as client:
        r = client.post("/predict", files={"file": ("x.png", to_png(x[0]), "image/png")})
        assert r.status_code == 200 and r.json()["label"] == got.label[0]


def test_a_badly_calibrated_model_fails_the_check_and_writes_nothing(small_run, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    # Black calibration images: every activation range collapses, real images saturate.
    monkeypatch.setattr(
        export_module, "calibration_images", lambda data_dir=None: np.zeros((64, 28, 28), np.uint8)
    )
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match=r"agrees with PyTorch on .* \(needed at least 99.5%\)"):
        export(small_run, out, int8=True)
    assert list(tmp_path.iterdir()) == []
