"""The run report (Markdown and standalone HTML), compare, and the refusals of bad runs."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fmnist.cli import main
from fmnist.errors import RunDirError
from fmnist.report import reproduce_command, write_report
from fmnist.rundir import FILES, Run

FIGURES = {"accuracy.png", "loss.png", "confusion_matrix.png", "per_class_accuracy.png",
           "mistakes.png", "reliability.png", "embedding.png", "predictions.png"}  # fmt: skip


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run directory, so tests can write into it or damage it."""
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="module")
def reported(small_run, tmp_path_factory):
    """A copy of the small run with its report written, and the seconds it took."""
    run = copy_run(small_run, tmp_path_factory.mktemp("report") / "run")
    t0 = time.perf_counter()
    html = write_report(run)
    return run, html, time.perf_counter() - t0


def test_report_writes_every_file_and_agrees_with_training(reported):
    run, html, seconds = reported
    assert html == run / "report.html"
    for name in (*FIGURES, "report.md", "report.html", "evaluation.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    ev = json.loads((run / "evaluation.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert ev["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert ev["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    assert sum(map(sum, ev["confusion_matrix"])) == ev["images"] == 10_000
    assert len(ev["per_class"]) == 10 and 0 < ev["ece"] < 1
    assert seconds < 60  # a few seconds on 2 cores; generous for a busy machine


def test_the_model_card_is_hugging_face_front_matter_and_agrees_with_metrics(reported):
    yaml = pytest.importorskip("yaml")
    run, _, _ = reported
    text = (run / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    card = yaml.safe_load(front)
    metrics = json.loads((run / "metrics.json").read_text())
    assert card["library_name"] == "fmnist" and card["pipeline_tag"] == "image-classification"
    assert card["datasets"] == ["zalando-datasets/fashion_mnist"]
    (result,) = card["model-index"][0]["results"]
    assert result["metrics"][0] == {"type": "accuracy", "value": round(metrics["test_accuracy"], 4)}
    assert f"Test accuracy **{metrics['test_accuracy']:.4f}**" in body and "Wilson" in body
    assert "## Intended use and limits" in body and "Not for people" in body
    assert "## Per class" in body  # the report's sections follow


def test_the_wilson_interval_holds_the_accuracy_and_narrows_with_more_images():
    from fmnist.report.card import wilson

    lo, hi = wilson(0.93, 10_000)
    assert lo < 0.93 < hi and hi - lo == pytest.approx(0.01, abs=0.001)
    lo2, hi2 = wilson(0.93, 1_000)
    assert hi2 - lo2 > hi - lo
    assert wilson(1.0, 100)[1] == pytest.approx(1.0) and wilson(1.0, 100)[0] < 1


def test_report_md_links_every_image_it_names(reported):
    run, _, _ = reported
    md = (run / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(linked) == FIGURES
    for name in linked:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ev = json.loads((run / "evaluation.json").read_text())
    assert f"| accuracy | {ev['accuracy']:.4f} |" in md
    assert "| Shirt |" in md and "## Reproduce" in md and "## Configuration" in md


class Refs(HTMLParser):
    """Collects every src/href attribute and the <img> sources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href"):
                self.refs.append(value or "")
                if tag == "img":
                    self.images.append(value or "")


def test_report_html_is_standalone(reported):
    _, html, _ = reported
    page = html.read_text()
    parser = Refs()
    parser.feed(page)
    assert len(parser.images) == len(FIGURES)
    assert all(r.startswith("data:image/png;base64,") for r in parser.refs)  # nothing fetched
    for src in parser.images:
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    assert "url(" not in page and "@import" not in page  # no external CSS either
    assert "<table>" in page and "Shirt" in page


def test_reproduce_command_recorded_derived_or_python():
    from dataclasses import asdict

    from fmnist.config import get_preset

    cfg = asdict(get_preset("seed", epochs=3, limit_train=500))
    assert reproduce_command(cfg, "fmnist train --preset seed") == "fmnist train --preset seed"
    assert reproduce_command(cfg) == "fmnist train --preset seed --epochs 3 --limit-train 500"
    smooth = asdict(get_preset("seed", label_smoothing=0.2))  # every field has a flag
    assert reproduce_command(smooth) == "fmnist train --preset seed --label-smoothing 0.2"
    odd = {**cfg, "preset": "custom"}  # no preset to start the flags from
    assert "TrainConfig.from_dict" in reproduce_command(odd)
    assert "from fmnist.training import train" in reproduce_command(odd)


def test_compare_two_runs(reported, small_run, tmp_path, capsys):
    run_with_report, _, _ = reported  # ECE read from evaluation.json
    png = tmp_path / "compare.png"
    assert main(["compare", str(small_run), str(run_with_report), "--out", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "preset", "model", "params", "epochs", "train", "s",
                                "test", "acc", "ECE"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {str(small_run), str(run_with_report)}
    a, b = rows.values()
    assert a[1:3] == ["seed", "seed"] and a[3] == "225,034"
    assert a[-1] == b[-1]  # the ECE computed now equals the one in evaluation.json
    assert png.read_bytes()[:4] == b"\x89PNG" and f"validation curves: {png}" in lines[-1]


@pytest.mark.parametrize("missing", ["model.safetensors", "metrics.json"])
def test_missing_files_say_what_and_which_command(missing, small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "run")
    (run / missing).unlink()
    (run / "checkpoint.safetensors").unlink(missing_ok=True)
    with pytest.raises(RunDirError, match=re.escape(missing)) as e:
        Run(run).require_finished()
    assert f"fmnist train --config {run / 'config.json'} --out NEW_DIR" in str(e.value)
    assert FILES[missing] in str(e.value)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmnist report: error:") and missing in err
    assert not (run / "report.html").exists()  # nothing half-written


def test_the_same_run_twice_is_refused_by_compare(small_run, capsys):
    assert main(["compare", str(small_run), f"{small_run}/"]) == 2
    err = capsys.readouterr().err
    assert "the same run given twice; give each run once." in err and err.count("\n") == 1


def test_interrupted_run_points_at_resume(small_run, tmp_path):
    run = copy_run(small_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    (run / "checkpoint.safetensors").write_bytes(b"state")  # what an interrupted run keeps
    with pytest.raises(RunDirError, match=re.escape(f"fmnist train --resume {run}")):
        Run(run).require_finished()


def test_not_a_directory_and_corrupt_weights_are_clear_errors(small_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    run = copy_run(small_run, tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"\x00garbage, not safetensors")
    for argv in (["report", str(run)], ["compare", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a readable safetensors file" in err and "Traceback" not in err
    assert not (run / "report.html").exists() and not (run / "evaluation.json").exists()


@pytest.mark.parametrize(
    ("history", "problem"),
    [
        ("a,b\n1,2,3\nx\n", "line 2: float() argument"),
        ("epoch\n1\n", "no column elapsed_seconds"),
        ("epoch\n" + "1" * 200_000 + "\n", "field larger than field limit"),  # csv's own
    ],
)
def test_a_damaged_history_is_named_before_anything_is_written(
    history, problem, small_run, tmp_path, capsys
):
    run = copy_run(small_run, tmp_path / "run")
    (run / "history.csv").write_text(history)
    before = sorted(p.name for p in run.iterdir())
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'history.csv'} is damaged (" in err and problem in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in run.iterdir()) == before  # no evaluation.json, no figures
