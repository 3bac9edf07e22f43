"""Classifier on a real trained model: batch path, photo robustness, and `fmnist predict FILE`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import carpet_photo, exported_copy
from PIL import Image

from fmnist.errors import ConfigError, FmnistError, ImageError
from fmnist.images import render_photo, to_png
from fmnist.predict import (
    Classifier,
    ModelFileError,
    Prediction,
    float_pixels,
    image_files,
    onnx_session,
    predict_files,
    run_onnx,
    softmax,
)


@pytest.fixture(scope="module")
def clf(small_run) -> Classifier:
    return Classifier.load(small_run)


@pytest.fixture(scope="module")
def sample(fashion):
    """500 test images and labels, chosen at random once."""
    _, (x_test, y_test) = fashion
    idx = np.random.default_rng(0).choice(len(x_test), 500, replace=False)
    return x_test[idx], y_test[idx]


def test_batch_path_matches_the_torch_model(small_run, clf, sample):
    from fmnist.checkpoint import load_model
    from fmnist.evaluation import predict_logits

    x, _ = sample
    model, _ = load_model(small_run)
    # fp32: in bf16, the Classifier's channels_last weights round differently (1e-5).
    logits = predict_logits(model, torch.from_numpy(x), precision="fp32")
    expected = torch.softmax(logits.double(), 1).numpy()
    result = Classifier.load(small_run, precision="fp32").predict(x)
    assert result.images is x  # uint8 (N, 28, 28) is taken as is
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert result.class_index.dtype == np.int64 and result.class_index.shape == (500,)
    assert result.label[0] == clf.classes[result.class_index[0]]
    np.testing.assert_allclose(result.probabilities.sum(1), 1, atol=1e-9)


def test_photos_stay_within_three_points_of_the_originals(clf, sample):
    x, y = sample
    rng = np.random.default_rng(1)
    photos = [render_photo(im, rng) for im in x]
    original = (clf.predict(x).class_index == y).mean()
    photo = (clf.predict(photos).class_index == y).mean()
    assert original > 0.7  # a real trained model, not chance (0.1)
    assert photo >= original - 0.03, (photo, original)


def test_every_kind_of_input(tmp_path, clf, sample):
    x, _ = sample
    path = tmp_path / "a.png"
    path.write_bytes(to_png(x[0]))
    expected = clf.predict(x[:1]).probabilities[0]
    rgb = np.repeat(x[0][..., None], 3, axis=2)
    for one in (str(path), path, Image.fromarray(x[0]), x[0], rgb, to_png(x[0])):
        result = clf.predict(one)
        assert len(result) == 1
        np.testing.assert_allclose(result.probabilities[0], expected, atol=1e-6)
    batch = clf.predict([path, x[1], Image.fromarray(x[2])])
    np.testing.assert_array_equal(batch.images, x[:3])
    colour_batch = clf.predict(np.repeat(x[:4, ..., None], 3, axis=3))  # (N, H, W, 3)
    np.testing.assert_array_equal(colour_batch.images, x[:4])


def test_top_k_is_sorted_and_complete(clf, sample):
    result = clf.predict(sample[0][:5])
    top = result.top_k(10)
    for row, probs in zip(top, result.probabilities, strict=True):
        assert [t["probability"] for t in row] == sorted(probs, reverse=True)
        assert {t["label"] for t in row} == set(clf.classes)
    assert top[0][0]["label"] == result.label[0]
    for k in (0, 11):
        with pytest.raises(ValueError, match=r"k must be in \[1, 10\], one per class"):
            result.top_k(k)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 10\], got 11"):
        next(predict_files(clf, ["nowhere.png"], top_k=11))  # before any file is read
    for chunk in (0, -1, 2.5):  # 0 returned no records at all
        with pytest.raises(ValueError, match=f"chunk must be an integer >= 1, got {chunk}"):
            next(predict_files(clf, ["nowhere.png"], chunk=chunk))


def test_predict_files_refuses_one_path_and_takes_path_objects(clf, tmp_path, sample):
    """A lone "./shirt.jpg" was walked letter by letter: "/" predicted the whole disk."""
    shirt = tmp_path / "shirt.png"
    Image.fromarray(sample[0][0]).save(shirt)
    for lone in (str(shirt), shirt):
        with pytest.raises(TypeError, match=r"got the single path .*shirt.png'; pass \["):
            next(predict_files(clf, lone))
    (record,) = predict_files(clf, [shirt])  # a Path: its record is JSON like a str's
    assert record["path"] == str(shirt) and json.loads(json.dumps(record))["path"] == str(shirt)


def test_bad_images_and_models_raise_clear_errors(tmp_path, clf):
    with pytest.raises(ImageError, match=r"image 1: .*not an image") as e:
        clf.predict([np.zeros((28, 28), np.uint8), b"not an image"])
    assert e.value.code == "not_an_image"
    with pytest.raises(ValueError, match=r"uint8 \(N, 28, 28\), got float32"):
        clf.predict_inputs(np.zeros((2, 28, 28), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        Classifier.load(bad)
    with pytest.raises(ModelFileError, match="missing.onnx does not exist.*fmnist export"):
        Classifier.load(tmp_path / "missing.onnx")


def test_predict_each_and_records(clf, sample):
    x, _ = sample
    images = [to_png(x[0]), b"not an image", x[1]]
    pred, outcomes = clf.predict_each(images, names=["a.png", "b.png", None])
    assert outcomes[0] == 0 and outcomes[2] == 1 and len(pred) == 2
    assert isinstance(outcomes[1], ImageError) and outcomes[1].code == "not_an_image"
    assert "b.png" in str(outcomes[1])
    np.testing.assert_array_equal(pred.images, x[:2])
    records = pred.records(top_k=2)
    assert [list(r) for r in records] == [
        ["label", "class_index", "probability", "unsure", "top_k"]
    ] * 2
    for r, p in zip(records, pred.probabilities, strict=True):
        assert r["label"] == clf.classes[r["class_index"]] == r["top_k"][0]["label"]
        assert r["probability"] == p.max() == r["top_k"][0]["probability"]
    assert all(
        r["unsure"] == (r["probability"] < clf.min_confidence[r["class_index"]]) for r in records
    )
    json.dumps(records)  # JSON-ready: plain ints and floats
    empty, outcomes = clf.predict_each([b""])
    assert len(empty) == 0 and empty.records() == [] and outcomes[0].code == "empty"


def test_the_torch_backend_leaves_the_process_thread_count_alone(small_run, sample):
    before = torch.get_num_threads()
    one = Classifier.load(small_run, threads=1)
    assert torch.get_num_threads() == before
    one.predict(sample[0][:10])
    assert torch.get_num_threads() == before


def test_onnx_runner_and_float_pixels(small_run, clf, sample):
    from fmnist.checkpoint import load_model
    from fmnist.export import to_onnx
    from fmnist.models import to_input

    x, _ = sample
    pixels = float_pixels(x)
    assert pixels.dtype == np.float32 and pixels.shape == (500, 1, 28, 28)
    np.testing.assert_array_equal(pixels, to_input(torch.from_numpy(x)).numpy())
    session = onnx_session(to_onnx(*load_model(small_run)), threads=1)
    logits = run_onnx(session, pixels, batch=128)  # four calls, the last one short
    fp32 = Classifier.load(small_run, precision="fp32")  # the exported graph's precision
    np.testing.assert_allclose(softmax(logits), fp32.predict(x).probabilities, atol=1e-4)
    assert run_onnx(session, pixels[:0]).shape == (0, 10)


def test_model_file_errors_are_fmnist_errors():
    assert issubclass(ModelFileError, FmnistError) and not issubclass(ModelFileError, ValueError)


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1, 0], [0.5, 0.5]])


# ---------------------------------------------------------------- files and the CLI


@pytest.fixture
def folder(tmp_path, sample):
    """A folder tree of photos, one unreadable file and one non-image file."""
    x, _ = sample
    rng = np.random.default_rng(2)
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for i in range(4):
        (tmp_path / "photos" / f"p{i}.jpg").write_bytes(render_photo(x[i], rng))
    (tmp_path / "photos" / "sub" / "p4.png").write_bytes(to_png(x[4]))
    (tmp_path / "photos" / "sub" / "broken.png").write_bytes(to_png(x[5])[:40])
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    return tmp_path / "photos"


def test_image_files_expands_folders_and_globs(folder):
    files = list(image_files([str(folder), str(folder / "p*.jpg"), str(folder / "none*.gif")]))
    paths = [p for p, err in files if err is None]
    assert len(paths) == 6 + 4  # the folder (recursive, images only) then the glob
    assert not any(p.endswith("notes.txt") for p in paths)
    assert files[-1] == (
        str(folder / "none*.gif"),
        f"no files match the pattern {str(folder / 'none*.gif')!r}",
    )


def test_cli_predict_files_json(folder, small_run, tmp_path, capsys):
    from fmnist.cli import main

    out = tmp_path / "pre"
    code = main(["predict", str(small_run), str(folder), str(folder / "notes.txt"), "--json",
                 "--top-k", "2", "--save-preprocessed", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1  # two files failed, the others were still predicted
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == 7
    ok = [r for r in records if "error" not in r]
    failed = {r["path"].split("/")[-1]: r["error"] for r in records if "error" in r}
    assert len(ok) == 5 and set(failed) == {"broken.png", "notes.txt"}
    assert "truncated or corrupt" in failed["broken.png"]
    assert "not an image" in failed["notes.txt"]
    for r in ok:
        assert r["label"] in small_run_classes(small_run)
        assert len(r["top_k"]) == 2 and r["top_k"][0]["label"] == r["label"]
        assert r["probability"] == r["top_k"][0]["probability"]
        saved = np.asarray(Image.open(r["preprocessed"]))
        assert saved.shape == (28, 28)
    assert "7 files: 5 predicted" in captured.err and "2 failed" in captured.err


def small_run_classes(run) -> list[str]:
    return json.loads((run / "model.json").read_text())["classes"]


def test_cli_predict_table_and_errors(folder, small_run, capsys):
    from fmnist.cli import main

    assert main(["predict", str(small_run), str(folder / "p0.jpg"), str(folder / "p1.jpg")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        len(out) == 3 and out[0].endswith("p0.jpg") and out[-1].startswith("2 files: 2 predicted")
    )
    assert out[0].split()[0] in ("sure", "unsure")  # the first column says which
    assert out[0].split()[1] in {c.split()[0] for c in small_run_classes(small_run)}
    assert "unsure)" in out[-1]
    assert main(["predict", str(small_run), str(folder / "missing.jpg")]) == 1
    assert "missing.jpg: Cannot read" in capsys.readouterr().err
    assert main(["predict", str(small_run)]) == 2
    assert "give image files, folders or globs, or --index N" in capsys.readouterr().err


def test_noise_and_blank_images_come_out_unsure(small_run, tmp_path, capsys):
    """Random noise and a blank photo are no garment: unsure, never a confident class."""
    clf = Classifier.load(small_run, min_confidence=0.9)
    noise = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    assert clf.predict_inputs(noise).unsure.all()
    blank = tmp_path / "blank.png"
    blank.write_bytes(to_png(np.full((64, 64), 200, np.uint8)))
    (record,) = predict_files(clf, [str(blank)])
    assert record["unsure"] is True and record["label"] is None
    assert "No garment found" in record["reason"]
    from fmnist.cli import main

    assert main(["predict", str(small_run), str(blank)]) == 0
    assert "1 files: 1 predicted (1 no garment; 1 unsure), 0 failed" in capsys.readouterr().out
    assert Classifier.load(small_run, min_confidence=0.0).predict_inputs(noise).unsure.sum() == 0
    with pytest.raises(ConfigError, match="min_confidence must be a probability"):
        Classifier.load(small_run, min_confidence=1.5)
    for value in (True, "0.5"):  # True made every answer unsure
        with pytest.raises(ConfigError, match="min_confidence must be one probability or one"):
            Classifier.load(small_run, min_confidence=value)
    for threads in (-1, 1.5, True):  # torch's own RuntimeError before, or a silent default
        with pytest.raises(ConfigError, match="threads must be None or a whole number >= 0"):
            Classifier.load(small_run, threads=threads)


def test_probabilities_that_are_not_numbers_are_unsure():
    """A model whose weights went NaN answers nothing sure, whatever the threshold."""
    probs = np.full((2, 10), 0.1)
    probs[1] = np.nan
    for t in (0.0, 0.05, np.zeros(10)):
        pred = Prediction(probs, tuple("abcdefghij"), np.zeros((2, 28, 28), np.uint8), t)
        assert pred.unsure.tolist() == [False, True]


def test_unsure_thresholds_per_class(small_run, fashion):
    """One threshold per class: an answer is unsure below its own class's threshold."""
    x = fashion[1][0][:200]  # test images: answers of several classes
    sure = Classifier.load(small_run, min_confidence=0.0).predict_inputs(x)
    picky = np.zeros(10)
    picky[sure.class_index[0]] = 1.0  # one class is (all but) never sure enough
    pred = Classifier.load(small_run, min_confidence=picky).predict_inputs(x)
    np.testing.assert_array_equal(pred.unsure, sure.probability < picky[sure.class_index])
    assert pred.unsure.any() and not pred.unsure.all()
    with pytest.raises(ConfigError, match="one probability or one per class .10: T-shirt"):
        Classifier.load(small_run, min_confidence=[0.5, 0.5])
    with pytest.raises(ConfigError, match="one probability or one per class .* got 'high'"):
        Classifier.load(small_run, min_confidence="high")
    with pytest.raises(ConfigError, match="must be a probability in"):
        Classifier.load(small_run, min_confidence=[0.5] * 9 + [float("nan")])


def test_photo_offsets_apply_to_segmented_photos_only(small_run, sample, tmp_path, capsys):
    x, _ = sample
    png = to_png(x[0])
    plain = Classifier.load(small_run)
    assert (plain.photo_offsets == 0).all()  # a run has none: tools/bundle.py fits them
    push = [0.0] * 10
    push[8] = 50.0  # Bag, whatever the image
    shifted = Classifier.load(small_run, photo_offsets=push)
    a, b = plain.predict([png, carpet_photo()]), shifted.predict([png, carpet_photo()])
    assert b.photo.tolist() == [False, True] and a.photo.tolist() == [False, True]
    np.testing.assert_allclose(b.probabilities[0], a.probabilities[0], atol=1e-12)
    assert b.label[1] == "Bag" and b.probability[1] > 0.999
    # Offsets go on the log of the shift-averaged probabilities (moderate ones, so that the
    # order shows: added before averaging they would give other numbers).
    mild = np.linspace(-1.0, 1.0, 10)
    c = Classifier.load(small_run, photo_offsets=mild).predict(carpet_photo())
    expected = softmax(np.log(a.probabilities[1:]) + mild)
    np.testing.assert_allclose(c.probabilities, expected, rtol=1e-9, atol=1e-15)
    # Dataset inputs (the fast path) and product shots are no photos: untouched.
    np.testing.assert_array_equal(shifted.predict(x).probabilities, plain.predict(x).probabilities)
    pred, _ = shifted.predict_each([png, carpet_photo()])
    assert pred.photo.tolist() == [False, True] and pred.label[1] == "Bag"
    for bad in ([1.0] * 9, [float("nan")] * 10, "big"):
        with pytest.raises(ConfigError, match="photo_offsets must be finite numbers"):
            Classifier.load(small_run, photo_offsets=bad)
    # The offsets travel in model.json and in the ONNX export's metadata.
    run, _ = exported_copy(small_run, tmp_path / "run", photo_offsets=push)
    for source in (run, run / "model.onnx"):
        np.testing.assert_array_equal(Classifier.load(source).photo_offsets, push)
    # fmnist serve loads them with the thresholds from model.json, whatever file runs.
    from fmnist.serve.backend import choose

    np.testing.assert_array_equal(choose(run, "torch").load().photo_offsets, push)
    # fmnist predict applies them, unless told not to.
    from fmnist.cli import main

    jpg = tmp_path / "carpet.jpg"
    jpg.write_bytes(carpet_photo())
    for flags, bag in (([], True), (["--no-photo-offsets"], False)):
        capsys.readouterr()
        assert main(["predict", str(run), str(jpg), "--json", *flags]) == 0
        assert (json.loads(capsys.readouterr().out)["label"] == "Bag") == bag


@pytest.mark.parametrize("bad", [[1.0, 2.0], "1.5", [True] * 10, [None] * 10])
def test_broken_photo_offsets_in_a_model_file_name_the_file(small_run, tmp_path, bad):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "photo_offsets": bad}))
    with pytest.raises(ModelFileError, match=r"run: its 'photo_offsets' value is unusable"):
        Classifier.load(run)
    assert (Classifier.load(run, photo_offsets=0).photo_offsets == 0).all()  # the way out
