"""Ensembles: beat the weaker member, reported like a run, one ONNX file, clear refusals."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import fmnist.ensemble
import fmnist.rundir
from fmnist.checkpoint import load_model
from fmnist.cli import main
from fmnist.ensemble import build_ensemble, load_members
from fmnist.predict import Classifier

# Two tiny members like the default preset (trained with flips, predicting with flip-TTA,
# calibrated): about 3 s each on 2 cores, and different enough (seeds) for averaging to help.
MEMBER = dict(epochs=1, limit_train=3000, flip=0.5, tta=True, calibrate=True,
              model_args={"width": 8, "hidden": 32})  # fmt: skip
# A run's figures without the training curves: an ensemble trains nothing.
FIGURES = {"confusion_matrix.png", "per_class_accuracy.png", "mistakes.png", "reliability.png",
           "embedding.png", "predictions.png"}  # fmt: skip


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    from fmnist.config import get_preset
    from fmnist.training import train

    root = tmp_path_factory.mktemp("members")
    return [
        train(get_preset("seed", seed=s, **MEMBER), out=root / f"seed{s}", quiet=True)
        for s in (1, 2)
    ]


@pytest.fixture(scope="module")
def built(members, tmp_path_factory):
    """The ensemble made once through the CLI with --onnx: (directory, onnx file, stdout)."""
    root = tmp_path_factory.mktemp("ensemble")
    out, onnx_file = root / "ens", root / "ens.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["ensemble", *map(str, members), "--out", str(out), "--onnx", str(onnx_file)])
    assert code == 0
    return out, onnx_file, stdout.getvalue()


def test_ensemble_beats_its_weaker_member_and_prints_the_scores(built, members):
    out, _, printed = built
    metrics = json.loads((out / "metrics.json").read_text())
    accs = [m["test_accuracy"] for m in metrics["members"]]
    print(f"members {accs}, ensemble {metrics['test_accuracy']}")  # shown with pytest -s
    assert [m["run"] for m in metrics["members"]] == list(map(str, members))
    assert metrics["test_accuracy"] >= min(accs)
    assert metrics["tta"] is True  # both members' runs use flip-TTA
    # Members are scored with flip-TTA like the ensemble: as their own runs scored them.
    for m, run in zip(metrics["members"], members, strict=True):
        trained = json.loads((run / "metrics.json").read_text())["test_accuracy"]
        assert m["test_accuracy"] == pytest.approx(trained, abs=1e-6)
    lines = printed.splitlines()
    assert lines[0].split() == ["member", "model", "test", "acc", "loss", "ECE"]
    for line, m in zip(lines[1:3], metrics["members"], strict=True):
        assert line.split()[0] == m["run"] and line.split()[2] == f"{m['test_accuracy']:.4f}"
    assert (
        f"ensemble of 2 runs with flip TTA: test accuracy {metrics['test_accuracy']:.4f}, "
        f"loss (NLL) {metrics['test_loss']:.4f}, ECE {metrics['ece']:.4f}"
    ) in printed
    assert f"ensemble directory: {out}" in printed


def test_saved_ensemble_averages_the_members_probabilities(built, members, fashion):
    out, _, _ = built
    model, meta = load_model(out)  # the directory alone rebuilds it, weights and all
    assert meta["model"] == "ensemble" and meta["tta"] is True
    x = torch.from_numpy(fashion[1][0][:500]).unsqueeze(1).float() / 255
    with torch.no_grad():
        ensemble = torch.softmax(model(x), 1)
        each = [torch.softmax(load_model(run)[0](x), 1) for run in members]
    # The members' temperatures (about 0.8 here) travel in the ensemble's model.json.
    assert all(float(m.temperature) != 1.0 for m in model.net.members)
    torch.testing.assert_close(ensemble, sum(each) / 2, atol=1e-6, rtol=0)
    assert (ensemble.argmax(1) != each[0].argmax(1)).any()  # not just one member


def test_report_is_written_like_a_runs(built):
    out, _, _ = built
    for name in (*FIGURES, "report.md", "report.html", "evaluation.json", "config.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "accuracy.png").exists()
    ev = json.loads((out / "evaluation.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert ev["model"] == "ensemble" and ev["tta"] is True and ev["images"] == 10_000
    assert ev["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    md = (out / "report.md").read_text()
    assert "An ensemble of 2 runs" in md and "with flip test-time augmentation" in md
    for m in metrics["members"]:
        assert f"| {m['run']} | seed |" in md
    assert f"| accuracy | {ev['accuracy']:.4f} |" in md and "best validation" not in md
    assert "fmnist ensemble " in md  # the reproduce command
    assert json.loads((out / "config.json").read_text())["members"] == [
        m["run"] for m in metrics["members"]
    ]


def test_onnx_export_matches_the_torch_ensemble(built, fashion):
    out, onnx_file, printed = built
    assert "ONNX parity on 10,000 test images" in printed and "0 different labels" in printed
    proto = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model"] == "ensemble" and props["tta"] == "true"
    assert json.loads(props["classes"])[9] == "Ankle boot"
    x = fashion[1][0][:1000]
    a, b = Classifier.load(onnx_file), Classifier.load(out)  # ONNX Runtime vs torch
    assert (a.backend, b.backend) == ("onnx", "torch") and a.tta and b.tta
    pa, pb = a.predict(x).probabilities, b.predict(x).probabilities
    np.testing.assert_allclose(pa, pb, atol=1e-4)
    assert (pa.argmax(1) == pb.argmax(1)).all()
    one = a.predict(x[:1]).probabilities  # dynamic batch
    np.testing.assert_allclose(one, pa[:1], atol=1e-5)


def test_compare_and_predict_take_the_ensemble_directory(built, members, tmp_path, capsys):
    out, _, _ = built
    png = tmp_path / "compare.png"
    assert main(["compare", str(members[0]), str(out), "--out", str(png)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows[str(out)][1:3] == ["ensemble", "ensemble"] and rows[str(out)][4] == "2"
    assert main(["predict", str(out), "--index", "0", "--figure", str(tmp_path / "p.png")]) == 0
    assert "true Ankle boot" in capsys.readouterr().out


def test_tta_follows_the_members_unless_told(members):
    models, metas = load_members(members)
    assert build_ensemble(models, metas)[1]["tta"] is True
    plain = [{**metas[0], "tta": False}, metas[1]]  # e.g. a seed-preset run: trained unflipped
    assert build_ensemble(models, plain)[1]["tta"] is False
    assert build_ensemble(models, plain, tta=True)[1]["tta"] is True


def ensemble_error(argv, capsys) -> str:
    assert main(["ensemble", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmnist ensemble: error:") and "Traceback" not in err
    return err


def test_resume_on_an_ensemble_says_there_is_nothing_to_train(built, capsys):
    out, _, _ = built
    assert main(["train", "--resume", str(out)]) == 2
    assert "is an ensemble of finished runs" in capsys.readouterr().err


def test_bad_inputs_are_clear_errors_and_write_nothing(members, tmp_path, capsys):
    a, b = map(str, members)
    out = tmp_path / "out"
    err = ensemble_error([a, "--out", str(out)], capsys)
    assert "at least 2 runs, got 1" in err and "fmnist ensemble runs/a runs/b" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no model here")
    err = ensemble_error([a, str(empty), "--out", str(out)], capsys)
    assert "has no model: expected model.safetensors and model.json" in err
    assert "found notes.txt" in err and f"fmnist train --out {empty}" in err
    assert "does not exist" in ensemble_error([a, str(tmp_path / "nope")], capsys)

    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "classes": meta["classes"][::-1]}))
    err = ensemble_error([a, str(other), "--out", str(out)], capsys)
    assert "disagree on the classes" in err and f"leave {other} out" in err

    assert "given twice" in ensemble_error([a, f"{a}/model.safetensors", b], capsys)
    ens = tmp_path / "ens"
    assert main(["ensemble", a, b, "--out", str(ens)]) == 0
    capsys.readouterr()
    for member in (ens, ens / "model.safetensors"):  # a once through ens, once as given
        err = ensemble_error([str(member), a, "--out", str(out)], capsys)
        assert f"{member} is an ensemble itself: its members would weigh in once" in err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("mine")
    err = ensemble_error([a, b, "--out", str(tmp_path / "notes")], capsys)
    assert "already holds files (README.md) that the ensemble's could replace" in err
    assert (tmp_path / "notes" / "README.md").read_text() == "mine"
    assert "one of the members" in ensemble_error([a, b, "--out", a], capsys)
    err = ensemble_error([a, b, "--out", str(other)], capsys)
    assert "not an ensemble" in err  # a trained run's model is never replaced
    err = ensemble_error([a, b, "--out", str(out), "--onnx", str(tmp_path / "e.bin")], capsys)
    assert "--onnx must end in .onnx" in err
    (tmp_path / "afile").write_text("in the way")
    with pytest.MonkeyPatch.context() as mp:  # refused before the members are scored
        mp.setattr(fmnist.ensemble, "_score_members", lambda *args: pytest.fail("scored"))
        for where in ("afile", "afile/ens"):
            err = ensemble_error([a, b, "--out", str(tmp_path / where)], capsys)
            assert f"{tmp_path / 'afile'} is a file, not a folder" in err

        def read_only(**kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        mp.setattr(fmnist.rundir.tempfile, "TemporaryFile", read_only)  # the writable probe
        for given in ([a, b, "--out", str(out)], [a, b]):  # --out, and the default runs/
            err = ensemble_error(given, capsys)
            assert "Read-only file system in" in err and "a folder you can write to" in err
    assert not out.exists()  # every refusal comes before any write
