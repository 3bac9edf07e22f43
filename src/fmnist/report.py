"""A run's report: evaluation.json, figures, report.md and a self-contained report.html.

``write_report(run_dir)`` scores the run's model on the test set once, draws every figure
into the run directory, and writes the same content twice: Markdown that links the PNGs,
and HTML with the PNGs embedded as base64 data URLs (it opens anywhere, offline).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EMBED_IMAGES = 1000  # test images in the feature map: t-SNE on 1,000 points takes ~2 s
EXAMPLES = 6  # test images in the example-prediction figure
# What a finished `fmnist train` run directory holds, and what each file is for.
RUN_FILES = {
    "config.json": "the training config",
    "metrics.json": "the test metrics, written when training ends",
    "history.csv": "the per-epoch curves",
    "model.safetensors": "the weights, written after the first epoch",
    "model.json": "the model description, written with the weights",
}


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """Return ``run_dir`` as a Path if it is a finished run, else say what is missing and why."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a directory. Expected a run directory written by "
            f"`fmnist train` (e.g. runs/latest); make one with `fmnist train --out {run_dir}`."
        )
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if not missing:
        return run_dir
    what = "; ".join(f"{name} ({RUN_FILES[name]})" for name in missing)
    if (run_dir / "checkpoint.safetensors").is_file():
        fix = (
            "Its training was interrupted before the end; finish it with "
            f"`fmnist train --resume {run_dir}`."
        )
    else:
        fix = f"Train a run there with `fmnist train --out {run_dir}`."
    raise FileNotFoundError(f"{run_dir} is not a finished run: missing {what}. {fix}")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a clear error naming the damaged file."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); the run directory is damaged: train it again."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    return data


def reproduce_command(config: dict[str, Any], recorded: str | None = None) -> str:
    """The shell command that trains ``config`` again: the recorded one, else a derived one."""
    if recorded:
        return recorded
    from .train import PRESETS

    flags = ("epochs", "batch_size", "lr", "val_split", "seed", "limit_train")  # `fmnist train`
    preset = PRESETS.get(config.get("preset", ""))
    if preset is not None:
        base = dataclasses.asdict(preset)
        diff = {k: v for k, v in config.items() if base.get(k) != v and k != "device"}
        if all(k in flags and v is not None for k, v in diff.items()):
            args = ["fmnist", "train", "--preset", config["preset"]]
            for k, v in diff.items():
                args += [f"--{k.replace('_', '-')}", str(v)]
            return shlex.join(args)
    # A config the CLI flags cannot express: train it from its saved config.json.
    return (
        'python -c "import json; from fmnist.train import TrainConfig, train; '
        "train(TrainConfig.from_dict(json.load(open('config.json'))))\""
    )


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None):
    """Score a finished run's model on the test set: (Evaluation, model, meta, test images)."""
    from .checkpoint import load_model
    from .data import load_data
    from .evaluate import evaluate

    run_dir = check_run_dir(run_dir)
    model, meta = load_model(run_dir)
    _, (x_test, y_test) = load_data(data_dir)
    ev = evaluate(model, x_test, y_test, tta=bool(meta.get("tta")), classes=meta["classes"])
    return ev, model, meta, x_test


def _json_ready(obj: Any) -> Any:
    """numpy arrays to lists and NaN to None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_json_ready(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def write_figures(run_dir: Path, ev, model, meta: dict, x_test: np.ndarray) -> dict[str, str]:
    """Draw every figure of the report into ``run_dir``; return {file name: caption}."""
    from .evaluate import calibration_bins, embed_2d, penultimate_features
    from .plots import (
        confusion_matrix_figure,
        embedding_figure,
        history_figure,
        mistakes_figure,
        per_class_accuracy_figure,
        predictions_figure,
        reliability_figure,
        save,
    )
    from .train import read_history

    classes, labels, probs = meta["classes"], ev.labels, ev.probabilities
    cm = np.array(ev.metrics["confusion_matrix"])
    history = read_history(run_dir / "history.csv")  # empty for an ensemble: no curves
    pick = np.sort(np.random.default_rng(0).choice(len(labels), EMBED_IMAGES, replace=False))
    points = embed_2d(penultimate_features(model, x_test[pick]), "tsne")
    curves = (
        {
            "accuracy.png": (
                history_figure(history, "accuracy"),
                "Training and validation accuracy per epoch: a widening gap means overfitting.",
            ),
            "loss.png": (
                history_figure(history, "loss"),
                "Training and validation loss per epoch.",
            ),
        }
        if history
        else {}
    )
    figures = {
        **curves,
        "confusion_matrix.png": (
            confusion_matrix_figure(cm, classes),
            "Confusion matrix: rows are the true classes, columns the predictions; "
            "off-diagonal cells are the mistakes.",
        ),
        "per_class_accuracy.png": (
            per_class_accuracy_figure(cm, classes),
            "Accuracy on each class's test images; the dashed line is the overall accuracy.",
        ),
        "mistakes.png": (
            mistakes_figure(x_test, labels, probs, classes),
            "The test images the model gets wrong with the highest confidence.",
        ),
        "reliability.png": (
            reliability_figure(calibration_bins(probs, labels), ev.metrics["ece"]),
            "Reliability diagram: how often the model is right when it is p % sure; "
            "bars on the diagonal mean well-calibrated probabilities.",
        ),
        "embedding.png": (
            embedding_figure(
                points,
                labels[pick],
                x_test[pick],
                classes,
                title="t-SNE of the penultimate-layer features",
            ),
            "The features the last layer sees (in an ensemble, every member's side by "
            "side), mapped to 2-D with t-SNE: classes that "
            "overlap here are the ones the model confuses.",
        ),
        "predictions.png": (
            predictions_figure(x_test[:EXAMPLES], probs[:EXAMPLES], labels[:EXAMPLES], classes),
            f"The first {EXAMPLES} test images with the predicted probabilities.",
        ),
    }
    for name, (fig, _) in figures.items():
        save(fig, run_dir / name)
    return {name: caption for name, (_, caption) in figures.items()}


# ---------------------------------------------------------------- rendering

# A report is a list of blocks: ("h1"|"h2"|"p"|"code", text), ("table", header, rows),
# ("img", file name, caption); one renderer writes Markdown, the other HTML.


def _markdown(blocks: list[tuple]) -> str:
    """Render blocks as GitHub Markdown; images are links to the PNGs beside the file."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(f"{'#' * int(kind[1])} {rest[0]}")
        elif kind == "p":
            out.append(rest[0])
        elif kind == "code":
            out.append(f"```\n{rest[0]}\n```")
        elif kind == "table":
            header, rows = rest
            lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            name, caption = rest
            out.append(f"![{caption}]({name})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin-top: 1em; }
figcaption { color: #555; font-style: italic; margin-bottom: 1.5em; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; }
"""


def _html(blocks: list[tuple], run_dir: Path, title: str) -> str:
    """Render blocks as one standalone HTML page with every image as a data URL."""
    esc = html.escape

    def td(v: Any) -> str:
        try:
            float(str(v))  # numbers are right-aligned
            return f'<td class="n">{esc(str(v))}</td>'
        except ValueError:
            return f"<td>{esc(str(v))}</td>"

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
    ]
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(rest[0])}</p>")
        elif kind == "code":
            out.append(f"<pre><code>{esc(rest[0])}</code></pre>")
        elif kind == "table":
            header, rows = rest
            out.append("<table><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(map(td, row)) + "</tr>" for row in rows]
            out.append("</table>")
        elif kind == "img":
            name, caption = rest
            data = base64.b64encode((run_dir / name).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _blocks(
    run_dir: Path, config: dict, metrics: dict, meta: dict, ev, captions: dict[str, str]
) -> list[tuple]:
    """The report's content, in reading order."""
    from .system import versions

    m = ev.metrics
    cm = np.array(m["confusion_matrix"])
    trained, now = meta.get("versions", {}), versions()
    tta = (
        "with flip test-time augmentation" if meta.get("tta") else "without test-time augmentation"
    )
    blocks: list[tuple] = [("h1", f"Fashion-MNIST run report: {run_dir.name}")]
    if metrics.get("members"):  # written by `fmnist ensemble`
        blocks += _ensemble_blocks(metrics, m, tta)
    else:
        blocks.append(
            (
                "p",
                f"Preset {config.get('preset')!r}, model {meta['model']!r} "
                f"({metrics.get('params', 0):,d} parameters), trained for "
                f"{metrics.get('epochs')} epochs in {metrics.get('train_seconds', 0):.0f} s on "
                f"{metrics.get('hardware', 'unknown hardware')}. Test accuracy "
                f"{m['accuracy']:.2%} on {m['images']:,d} test images, {tta}; the weights are "
                f"those of the best validation epoch ({metrics.get('best_epoch')}).",
            )
        )
    best_val = metrics.get("best_val_accuracy")  # none for an ensemble
    best_val_row = [["best validation accuracy", f"{best_val:.4f}"]] if best_val is not None else []
    blocks += [
        ("h2", "Headline metrics (test set)"),
        (
            "table",
            ["metric", "value"],
            [
                ["accuracy", f"{m['accuracy']:.4f}"],
                ["top-2 accuracy", f"{m['top2_accuracy']:.4f}"],
                ["loss (negative log-likelihood, nats per image)", f"{m['loss']:.4f}"],
                [f"expected calibration error ({m['ece_bins']} bins)", f"{m['ece']:.4f}"],
                ["macro precision", f"{m['macro_precision']:.4f}"],
                ["macro recall", f"{m['macro_recall']:.4f}"],
                ["macro F1", f"{m['macro_f1']:.4f}"],
                *best_val_row,
                ["training time (s)", f"{metrics.get('train_seconds', math.nan):.1f}"],
            ],
        ),
        ("h2", "Per class"),
        (
            "p",
            "Recall is the accuracy on the images of a class; precision is how often a "
            "prediction of the class is right. The last column names the class its images "
            "are most often mistaken for.",
        ),
    ]
    rows = []
    for i, c in enumerate(m["per_class"]):
        off = cm[i].copy()
        off[i] = -1
        j = int(off.argmax())
        confused = f"{m['classes'][j]} ({cm[i, j] / max(c['support'], 1):.1%})" if cm[i, j] else "-"
        rows.append([c["class"], f"{c['precision']:.4f}", f"{c['recall']:.4f}",
                     f"{c['f1']:.4f}", c["support"], confused])  # fmt: skip
    blocks.append(("table", ["class", "precision", "recall", "F1", "images", "confused with"],
                   rows))  # fmt: skip
    blocks.append(("h2", "Figures"))
    blocks += [("img", name, caption) for name, caption in captions.items()]
    blocks += [
        ("h2", "Reproduce"),
        ("p", f"Commit: {metrics.get('commit') or 'unknown (not run from a git checkout)'}."),
        ("code", reproduce_command(config, metrics.get("command"))),
        ("h2", "Configuration"),
        ("table", ["field", "value"], [[k, json.dumps(v)] for k, v in config.items()]),
        ("h2", "Hardware and software"),
        (
            "table",
            ["item", "value"],
            [
                ["hardware", metrics.get("hardware", "unknown")],
                ["device", metrics.get("device", "unknown")],
                ["torch threads", metrics.get("threads", "unknown")],
            ],
        ),
        (
            "table",
            ["package", "training", "this report"],
            [[k, trained.get(k, "-"), now.get(k, "-")] for k in {**trained, **now}],
        ),
    ]
    return blocks


def _ensemble_blocks(metrics: dict, m: dict, tta: str) -> list[tuple]:
    """The opening of an ensemble's report: what it averages and how each member scores."""
    members = metrics["members"]
    best = max(r["test_accuracy"] for r in members)
    rows = [[r["run"], r["model"], f"{r['params']:,d}", f"{r['test_accuracy']:.4f}",
             f"{r['test_loss']:.4f}", f"{r['ece']:.4f}"] for r in members]  # fmt: skip
    return [
        (
            "p",
            f"An ensemble of {len(members)} runs ({metrics.get('params', 0):,d} parameters in "
            "all): it predicts the mean of the members' softmax probabilities. Test accuracy "
            f"{m['accuracy']:.2%} on {m['images']:,d} test images, {tta}; the best member "
            f"alone reaches {best:.2%}, scored the same way.",
        ),
        ("table", ["member", "model", "params", "test accuracy", "loss", "ECE"], rows),
    ]


def write_report(
    run_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    evaluated: tuple | None = None,
) -> Path:
    """Evaluate a finished run and write its figures, evaluation.json, report.md and
    report.html into ``run_dir``; return the path of report.html.

    ``evaluated`` is :func:`evaluate_run`'s result when the caller has it already (`fmnist
    ensemble` scores its model before writing the directory), so it is not scored twice.
    """
    from .checkpoint import atomic_write_bytes, atomic_write_json
    from .evaluate import calibration_bins

    run_dir = check_run_dir(run_dir)
    config = _read_json(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    # All checks before any write.
    ev, model, meta, x_test = evaluated or evaluate_run(run_dir, data_dir)
    evaluation = {
        "run": str(run_dir),
        "model": meta["model"],
        "tta": bool(meta.get("tta")),
        "split": "test",
        **ev.metrics,
        "calibration": calibration_bins(ev.probabilities, ev.labels, ev.metrics["ece_bins"]),
    }
    atomic_write_json(run_dir / "evaluation.json", _json_ready(evaluation))
    captions = write_figures(run_dir, ev, model, meta, x_test)
    blocks = _blocks(run_dir, config, metrics, meta, ev, captions)
    title = f"Fashion-MNIST run report: {run_dir.name}"
    atomic_write_bytes(run_dir / "report.md", _markdown(blocks).encode())
    atomic_write_bytes(run_dir / "report.html", _html(blocks, run_dir, title).encode())
    return run_dir / "report.html"


# ---------------------------------------------------------------- compare


def compare_runs(
    run_dirs: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """One row per finished run: preset, model, params, epochs, time, accuracy, ECE, history.

    The ECE comes from the run's evaluation.json when `fmnist report` wrote one; otherwise
    the model is scored on the test set now (a few seconds for small models).
    """
    from .train import read_history

    if not run_dirs:
        raise ValueError("compare needs at least one run directory, got none.")
    rows = []
    for d in run_dirs:
        run_dir = check_run_dir(d)
        config = _read_json(run_dir / "config.json")
        metrics = _read_json(run_dir / "metrics.json")
        if (run_dir / "evaluation.json").is_file():
            ece = _read_json(run_dir / "evaluation.json")["ece"]
        else:
            ece = evaluate_run(run_dir, data_dir)[0].metrics["ece"]
        rows.append(
            {
                "run": str(d),
                "preset": config.get("preset"),
                "model": config.get("model"),
                "params": metrics.get("params"),
                "epochs": metrics.get("epochs"),
                "train_seconds": metrics.get("train_seconds"),
                "test_accuracy": metrics.get("test_accuracy"),
                "ece": ece,
                "history": read_history(run_dir / "history.csv"),
            }
        )
    return rows


def compare_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare_runs` as an aligned text table."""
    width = max(len("run"), *(len(r["run"]) for r in rows))
    lines = [
        f"{'run':{width}s} {'preset':10s} {'model':8s} {'params':>10s} {'epochs':>6s} "
        f"{'train s':>8s} {'test acc':>8s} {'ECE':>7s}"
    ]
    for r in rows:
        lines.append(
            f"{r['run']:{width}s} {r['preset']!s:10s} {r['model']!s:8s} {r['params']:>10,d} "
            f"{r['epochs']:>6d} {r['train_seconds']:>8.1f} {r['test_accuracy']:>8.4f} "
            f"{r['ece']:>7.4f}"
        )
    return "\n".join(lines)


def write_compare_figure(rows: Sequence[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Save the validation curves of the compared runs as one PNG at ``out``."""
    from .plots import compare_figure, save

    return save(compare_figure({r["run"]: r["history"] for r in rows}), out)
