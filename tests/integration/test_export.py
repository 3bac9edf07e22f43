"""ONNX export: parity with PyTorch, metadata, dynamic batch, TTA, no file on failure."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fmnist import export as export_module
from fmnist.cli import main
from fmnist.export import ExportError, export
from fmnist.predict import Classifier, ModelFileError


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    """The small run exported to ONNX once, with its report."""
    out = tmp_path_factory.mktemp("onnx") / "seed.onnx"
    return export(small_run, out)


def test_export_passes_parity_on_the_test_set(exported, small_run):
    assert exported.path.is_file() and exported.bytes == exported.path.stat().st_size
    assert exported.images == 10_000
    assert exported.max_prob_diff <= 1e-4 and exported.label_mismatches == 0
    assert [p.name for p in exported.path.parent.iterdir()] == ["seed.onnx"]  # no temp files


def test_metadata_lets_any_onnx_reader_use_the_file(exported, small_run):
    meta = json.loads((small_run / "model.json").read_text())
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == meta["classes"]
    assert props["model"] == meta["model"] and props["tta"] == "false"
    assert "[0, 1]" in props["input"] and props["fmnist_version"]
    ops = {node.op_type for node in model.graph.node}  # pooling as ONNX's own MaxPool, the
    assert {"Conv", "MaxPool", "Gemm"} <= ops and "Max" not in ops  # inference path not traced


def test_an_onnx_file_whose_weights_are_not_numbers_is_refused(exported, tmp_path):
    """NaN weights (a diverged training) give a clear error at load, not NaN answers."""
    model = onnx.load(str(exported.path))
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)  # a conv kernel
    values = onnx.numpy_helper.to_array(weight).copy()
    values.flat[0] = np.nan
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    broken = tmp_path / "nan.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ModelFileError, match="weights are not numbers"):
        Classifier.load(broken)


def test_dynamic_batch_and_classifier_parity(exported, small_run, fashion):
    _, (x_test, _) = fashion
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "pixels" and inp.shape[1:] == [1, 28, 28] and isinstance(inp.shape[0], str)
    for n in (1, 7, 300):
        (logits,) = session.run(None, {"pixels": x_test[:n, None].astype(np.float32) / 255})
        assert logits.shape == (n, 10)
    onnx_clf = Classifier.load(exported.path)
    torch_clf = Classifier.load(small_run, precision="fp32")  # the exported graph's
    assert onnx_clf.backend == "onnx" and onnx_clf.classes == torch_clf.classes
    a, b = onnx_clf.predict(x_test[:2000]), torch_clf.predict(x_test[:2000])
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    assert (a.class_index == b.class_index).all()


def test_tta_is_inside_the_graph(small_run, tmp_path, fashion):
    run = tmp_path / "tta"
    shutil.copytree(small_run, run)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "tta": True}))
    report = export(run)
    assert report.path == run / "model.onnx" and report.label_mismatches == 0
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert props["tta"] == "true"
    _, (x_test, _) = fashion
    onnx_clf = Classifier.load(report.path)
    torch_clf = Classifier.load(run, precision="fp32")
    assert onnx_clf.tta and torch_clf.tta
    np.testing.assert_allclose(
        onnx_clf.predict(x_test[:500]).probabilities,
        torch_clf.predict(x_test[:500]).probabilities,
        atol=1e-4,
    )
    plain = Classifier.load(small_run, precision="fp32").predict(x_test[:500]).probabilities
    assert np.abs(onnx_clf.predict(x_test[:500]).probabilities - plain).max() > 1e-3


def test_temperature_is_applied_by_the_loader_and_inside_the_graph(small_run, tmp_path, fashion):
    run = tmp_path / "calibrated"
    shutil.copytree(small_run, run)
    meta = json.loads((run / "model.json").read_text())
    meta["normalization"]["temperature"] = 0.5
    (run / "model.json").write_text(json.dumps(meta))
    x = fashion[1][0][:500]
    plain, calibrated = (Classifier.load(r, precision="fp32") for r in (small_run, run))
    report = export(run)
    assert report.label_mismatches == 0
    p = plain.predict(x).probabilities
    sharper = p**2 / (p**2).sum(1, keepdims=True)  # softmax(logits / 0.5)
    np.testing.assert_allclose(calibrated.predict(x).probabilities, sharper, atol=1e-5)
    onnx_probs = Classifier.load(report.path).predict(x).probabilities
    np.testing.assert_allclose(onnx_probs, sharper, atol=1e-4)


def test_failed_parity_leaves_no_file(small_run, tmp_path, monkeypatch):
    real = export_module.run_onnx

    def drifting(session, pixels, batch=1000):
        logits = real(session, pixels, batch)
        logits[:, 0] += 0.01  # a small drift: probabilities move by more than 1e-4
        return logits

    monkeypatch.setattr(export_module, "run_onnx", drifting)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"largest probability difference .* \(allowed 1e-04\)"):
        export(small_run, out)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_its_errors(small_run, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(small_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity on 10,000 test images" in printed and f"wrote {out}" in printed
    assert out.is_file()
    assert main(["export", str(small_run), "--out", str(tmp_path / "model.bin")]) == 2
    assert "--out must end in .onnx" in capsys.readouterr().err
    assert main(["export", str(small_run), "--out", str(tmp_path / "no" / "m.onnx")]) == 2
    assert "does not exist. Create it first" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unsure_thresholds_in_the_metadata_old_new_and_broken(exported, tmp_path):
    """One number (older files), one per class, or garbage: the last a clear error."""
    for value, expected in (("0.6", [0.6] * 10), (json.dumps([0.1 * i for i in range(10)]),
                            [0.1 * i for i in range(10)]), ("high", None)):  # fmt: skip
        model = onnx.load(str(exported.path))
        onnx.helper.set_model_props(
            model, {**{p.key: p.value for p in model.metadata_props}, "min_confidence": value}
        )
        path = tmp_path / "m.onnx"
        onnx.save(model, str(path))
        if expected is None:
            with pytest.raises(ModelFileError, match="its 'min_confidence' value is unusable"):
                Classifier.load(path)
            assert (Classifier.load(path, min_confidence=0.5).min_confidence == 0.5).all()
        else:
            np.testing.assert_allclose(Classifier.load(path).min_confidence, expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [("big", "got 'big'"), ("[1, 2]", r"got \[1, 2\]")],
)
def test_broken_photo_offsets_in_the_metadata(exported, tmp_path, value, message):
    model = onnx.load(str(exported.path))
    onnx.helper.set_model_props(
        model, {**{p.key: p.value for p in model.metadata_props}, "photo_offsets": value}
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=message) as e:
        Classifier.load(path)
    assert f"{path}: its 'photo_offsets' value is unusable" in str(e.value)
    assert (Classifier.load(path, photo_offsets=0).photo_offsets == 0).all()


def test_an_onnx_path_that_is_a_folder_suggests_an_onnx_file_in_it(tmp_path):
    """`fmnist export RUN --out dir.onnx/` suggested dir.onnx/name.png."""
    from fmnist.errors import OutputError
    from fmnist.export import check_output

    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(OutputError) as e:
        check_output(tmp_path / "d.onnx")
    assert f"is a folder; expected a file name such as {tmp_path / 'd.onnx' / 'name.onnx'}" in str(
        e.value
    )
