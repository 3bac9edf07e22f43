"""Shift averaging: a picture the pipeline changed is predicted five times, moved by a pixel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import carpet_photo, exported_copy

from fmnist.decision import PHOTO_SHIFTS, moved
from fmnist.errors import ConfigError, ModelFileError
from fmnist.images import picture_input, to_png
from fmnist.predict import Classifier


@pytest.fixture(scope="module")
def sample(fashion):
    _, (x_test, _) = fashion
    return x_test[:20]


def test_moved_fills_the_gap_black_and_takes_one_pixel_at_most():
    assert set(PHOTO_SHIFTS) == {(0, 1), (0, -1), (1, 0), (-1, 0)}
    x = np.arange(1, 2 * 3 * 4 + 1, dtype=np.uint8).reshape(2, 3, 4)
    down, up, right, left = (moved(x, *s) for s in ((1, 0), (-1, 0), (0, 1), (0, -1)))
    assert (down[:, 1:] == x[:, :-1]).all() and (down[:, 0] == 0).all()
    assert (up[:, :-1] == x[:, 1:]).all() and (up[:, -1] == 0).all()
    assert (right[:, :, 1:] == x[:, :, :-1]).all() and (right[:, :, 0] == 0).all()
    assert (left[:, :, :-1] == x[:, :, 1:]).all() and (left[:, :, -1] == 0).all()
    assert (moved(x, 0, 0) == x).all()
    for bad in ((2, 0), (1.0, 0), (True, 0)):
        with pytest.raises(ValueError, match=r"-1, 0 or 1 pixel \(int\) per axis"):
            moved(x, *bad)
    with pytest.raises(ValueError, match=r"inputs \(N, H, W\).*got shape \(3, 4\)"):
        moved(x[0], 1, 0)


def test_pictures_the_pipeline_changed_are_averaged_over_one_pixel_shifts(small_run, sample):
    x = sample
    one = Classifier.load(small_run, photo_shifts=False)
    avg = Classifier.load(small_run)  # a run's model.json says nothing: shifts on
    assert avg.photo_shifts and not one.photo_shifts
    inputs, changed = x[:3], np.array([False, True, True])
    a, b = one.predict_inputs(inputs, None, changed), avg.predict_inputs(inputs, None, changed)
    np.testing.assert_array_equal(b.probabilities[0], a.probabilities[0])  # unchanged: one pass
    copies = np.concatenate([moved(inputs[1:], dy, dx) for dy, dx in PHOTO_SHIFTS])
    each = one.predict_inputs(copies).probabilities.reshape(len(PHOTO_SHIFTS), 2, -1)
    expected = (a.probabilities[1:] + each.sum(0)) / (1 + len(PHOTO_SHIFTS))
    np.testing.assert_allclose(b.probabilities[1:], expected, rtol=1e-9, atol=1e-12)
    assert not np.allclose(b.probabilities[1:], a.probabilities[1:], atol=1e-6)
    np.testing.assert_array_equal(b.images, inputs)  # what the model saw: the picture's own
    with pytest.raises(ValueError, match=r"changed must be one bool per input \(3\)"):
        avg.predict_inputs(inputs, None, [True])


def test_which_pictures_are_changed_and_shifted(small_run, sample):
    x = sample
    one, avg = Classifier.load(small_run, photo_shifts=False), Classifier.load(small_run)
    # uint8 batches (the fast path) and images in the dataset's convention are never moved;
    # a photo (cut out), an inverted 28x28 and a dark product shot on white (resized) are.
    np.testing.assert_array_equal(avg.predict(x).probabilities, one.predict(x).probabilities)
    shot = np.full((40, 30), 255, np.uint8)
    shot[7:33, 6:24] = 255 - x[1][1:27, 4:22] // 2  # dark garment on a white ground
    images = [to_png(x[0]), carpet_photo(), to_png(255 - x[2]), to_png(shot)]
    assert [picture_input(i)[2] for i in images] == [False, True, True, True]
    pa, pb = one.predict(images), avg.predict(images)
    each, rows = avg.predict_each(images)
    assert rows == [0, 1, 2, 3] and each.photo.tolist() == [False, True, False, False]
    np.testing.assert_array_equal(each.probabilities, pb.probabilities)
    np.testing.assert_array_equal(pb.probabilities[0], pa.probabilities[0])
    for i in (1, 2, 3):
        assert not np.allclose(pb.probabilities[i], pa.probabilities[i], atol=1e-6)


def test_the_setting_travels_in_the_model_file_and_the_onnx_export(small_run, tmp_path, capsys):
    from fmnist.cli import main

    run, meta = exported_copy(small_run, tmp_path / "run", photo_shifts=False)
    for source in (run, run / "model.onnx"):
        assert Classifier.load(source).photo_shifts is False
        assert Classifier.load(source, photo_shifts=True).photo_shifts is True
    from fmnist.serve.backend import choose  # the server keeps model.json's, whatever runs

    assert choose(run, "torch").load().photo_shifts is False
    assert choose(run, "onnx").load().photo_shifts is False
    # The ONNX backend averages as PyTorch does (fp32 both: the same numbers).
    photo = carpet_photo()
    torch_p = Classifier.load(run, photo_shifts=True, precision="fp32").predict(photo)
    onnx_p = Classifier.load(run / "model.onnx", photo_shifts=True).predict(photo)
    np.testing.assert_allclose(onnx_p.probabilities, torch_p.probabilities, atol=1e-5)
    # fmnist predict follows the file (once here), unless told otherwise.
    jpg = tmp_path / "carpet.jpg"
    jpg.write_bytes(photo)
    capsys.readouterr()
    assert main(["predict", str(run), str(jpg), "--json"]) == 0
    once = Classifier.load(run).predict(photo).probability[0]
    assert json.loads(capsys.readouterr().out)["probability"] == pytest.approx(once, abs=1e-9)
    # A bad value in either file names the file and the way out; a bad argument is refused.
    import onnx

    proto = onnx.load(run / "model.onnx")
    for prop in proto.metadata_props:
        if prop.key == "photo_shifts":
            prop.value = "yes"
    onnx.save(proto, tmp_path / "bad.onnx")
    (run / "model.json").write_text(json.dumps({**meta, "photo_shifts": "true"}))
    for bad in (run, tmp_path / "bad.onnx"):
        with pytest.raises(ModelFileError, match=r"'photo_shifts' value is unusable.*unquoted"):
            Classifier.load(bad)
    assert Classifier.load(run, photo_shifts=False).photo_shifts is False  # the way out
    with pytest.raises(ConfigError, match=r"photo_shifts must be true or false .*got 1 \(int\)"):
        Classifier.load(small_run, photo_shifts=1)
    # fmnist predict --no-photo-shifts predicts each picture once.
    want = {
        flags: Classifier.load(small_run, photo_shifts=not flags).predict(photo).probability[0]
        for flags in ((), ("--no-photo-shifts",))
    }
    assert want[()] != pytest.approx(want[("--no-photo-shifts",)], abs=1e-6)
    for flags, p in want.items():
        capsys.readouterr()
        assert main(["predict", str(small_run), str(jpg), "--json", *flags]) == 0
        assert json.loads(capsys.readouterr().out)["probability"] == pytest.approx(p, abs=1e-9)


def test_empty_batches_answer_empty(small_run, tmp_path):
    from fmnist.export import export

    export(small_run, tmp_path / "model.onnx")
    for source in (small_run, tmp_path / "model.onnx"):
        clf = Classifier.load(source)
        pred = clf.predict_inputs(np.empty((0, 28, 28), np.uint8))
        assert pred.probabilities.shape == (0, 10) and pred.records() == []
        none, outcomes = clf.predict_each([b"not an image"])
        assert len(none) == 0 and outcomes[0].code == "not_an_image"
