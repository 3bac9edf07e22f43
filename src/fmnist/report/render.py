"""The report's content as blocks, and its two renderings: Markdown and standalone HTML.

A report is a list of blocks: ("h1"|"h2"|"p"|"code", text), ("table", header, rows),
("img", file name, caption); one renderer writes Markdown, the other HTML.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import Run

Block = tuple  # ("h1", text), ("table", header, rows), ("img", name, caption), ...
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
# A config the CLI flags cannot express: train it from its saved config.json.
FROM_CONFIG = (
    'python -c "import json; from fmnist.config import TrainConfig; '
    "from fmnist.training import train; "
    "train(TrainConfig.from_dict(json.load(open('config.json'))))\""
)


def reproduce_command(config: dict[str, Any], recorded: str | None = None) -> str:
    """The shell command that trains ``config`` again: the recorded one, else a derived one."""
    from ..config import command_flags

    if recorded:
        return recorded
    flags = command_flags(config)
    return FROM_CONFIG if flags is None else shlex.join(["fmnist", "train", *flags])


def title(run: Run) -> str:
    """The report's title."""
    return f"Fashion-MNIST run report: {run.path.name}"


# ---------------------------------------------------------------- content


def _run_summary(config: dict, metrics: dict, meta: dict, m: dict, tta: str) -> list[Block]:
    """The opening of a trained run's report: what was trained, how long, how it scores."""
    return [
        (
            "p",
            f"Preset {config.get('preset')!r}, model {meta['model']!r} "
            f"({metrics.get('params', 0):,d} parameters), trained for "
            f"{metrics.get('epochs')} epochs in {metrics.get('train_seconds', 0):.0f} s on "
            f"{metrics.get('hardware', 'unknown hardware')}. Test accuracy "
            f"{m['accuracy']:.2%} on {m['images']:,d} test images, {tta}; the weights are "
            f"those of the best validation epoch ({metrics.get('best_epoch')}).",
        )
    ]


def _ensemble_summary(metrics: dict, m: dict, tta: str) -> list[Block]:
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


def _headline(metrics: dict, m: dict) -> list[Block]:
    """The table of test-set metrics."""
    best_val = metrics.get("best_val_accuracy")  # none for an ensemble
    best_val_row = [["best validation accuracy", f"{best_val:.4f}"]] if best_val is not None else []
    rows = [
        ["accuracy", f"{m['accuracy']:.4f}"],
        ["top-2 accuracy", f"{m['top2_accuracy']:.4f}"],
        ["loss (negative log-likelihood, nats per image)", f"{m['loss']:.4f}"],
        [f"expected calibration error ({m['ece_bins']} bins)", f"{m['ece']:.4f}"],
        ["macro precision", f"{m['macro_precision']:.4f}"],
        ["macro recall", f"{m['macro_recall']:.4f}"],
        ["macro F1", f"{m['macro_f1']:.4f}"],
        *best_val_row,
        ["training time (s)", f"{metrics.get('train_seconds', math.nan):.1f}"],
    ]
    return [("h2", "Headline metrics (test set)"), ("table", ["metric", "value"], rows)]


def _per_class(m: dict) -> list[Block]:
    """Precision, recall and F1 per class, and the class each is most confused with."""
    cm = np.array(m["confusion_matrix"])
    rows = []
    for i, c in enumerate(m["per_class"]):
        off = cm[i].copy()
        off[i] = -1
        j = int(off.argmax())
        confused = f"{m['classes'][j]} ({cm[i, j] / max(c['support'], 1):.1%})" if cm[i, j] else "-"
        rows.append([c["class"], f"{c['precision']:.4f}", f"{c['recall']:.4f}",
                     f"{c['f1']:.4f}", c["support"], confused])  # fmt: skip
    return [
        ("h2", "Per class"),
        (
            "p",
            "Recall is the accuracy on the images of a class; precision is how often a "
            "prediction of the class is right. The last column names the class its images "
            "are most often mistaken for.",
        ),
        ("table", ["class", "precision", "recall", "F1", "images", "confused with"], rows),
    ]


def _provenance(config: dict, metrics: dict, meta: dict) -> list[Block]:
    """How to make the run again, and on what hardware and software it was made."""
    from ..system import versions

    trained, now = meta.get("versions", {}), versions()
    return [
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


def report_blocks(run: Run, meta: dict, ev: Any, captions: dict[str, str]) -> list[Block]:
    """The report's content in reading order; ``ev`` is the test-set Evaluation."""
    config, metrics, m = run.config(), run.metrics(), ev.metrics
    tta = (
        "with flip test-time augmentation" if meta.get("tta") else "without test-time augmentation"
    )
    blocks: list[Block] = [("h1", title(run))]
    if run.kind == "ensemble":
        blocks += _ensemble_summary(metrics, m, tta)
    else:
        blocks += _run_summary(config, metrics, meta, m, tta)
    blocks += _headline(metrics, m) + _per_class(m)
    blocks.append(("h2", "Figures"))
    blocks += [("img", name, caption) for name, caption in captions.items()]
    return blocks + _provenance(config, metrics, meta)


# ---------------------------------------------------------------- renderers


def to_markdown(blocks: list[Block]) -> str:
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


def _html_table(header: list, rows: list[list]) -> list[str]:
    """An HTML table; cells that read as numbers are right-aligned."""
    esc = html.escape

    def td(v: Any) -> str:
        try:
            float(str(v))
            return f'<td class="n">{esc(str(v))}</td>'
        except ValueError:
            return f"<td>{esc(str(v))}</td>"

    out = ["<table><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(map(td, row)) + "</tr>" for row in rows]
    return [*out, "</table>"]


def to_html(blocks: list[Block], run_dir: Path, page_title: str) -> str:
    """Render blocks as one standalone HTML page with every image as a data URL."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(page_title)}</title><style>{CSS}</style></head><body>",
    ]
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(rest[0])}</p>")
        elif kind == "code":
            out.append(f"<pre><code>{esc(rest[0])}</code></pre>")
        elif kind == "table":
            out += _html_table(*rest)
        elif kind == "img":
            name, caption = rest
            data = base64.b64encode((run_dir / name).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
