"""A run's report: evaluation.json, figures, report.md, a self-contained report.html, and
the model card README.md.

``write_report(run_dir)`` scores the run's model on the test set once, draws every figure
into the run directory (figures.py), and writes the same content twice (render.py):
Markdown that links the PNGs, and HTML with the PNGs embedded as base64 data URLs (it
opens anywhere, offline). ``compare_runs`` (compare.py) puts several runs side by side.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import (
    EVALUATION,
    MODEL_CARD,
    REPORT_HTML,
    REPORT_MD,
    Run,
    atomic_write_bytes,
    atomic_write_json,
)
from .card import model_card
from .compare import compare_runs, compare_table, write_compare_figure
from .figures import write_figures
from .render import report_blocks, reproduce_command, title, to_html, to_markdown

__all__ = [
    "compare_runs",
    "compare_table",
    "evaluate_run",
    "reproduce_command",
    "write_compare_figure",
    "write_figures",
    "write_report",
]


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> tuple:
    """Score a finished run's model on the test set: (Evaluation, model, meta, test images)."""
    from ..checkpoint import load_model
    from ..evaluation import score_test

    run = Run(run_dir).require_finished()
    model, meta = load_model(run.path)
    ev = score_test(model, tta=bool(meta.get("tta")), classes=meta["classes"], data_dir=data_dir)
    return ev, model, meta, ev.images


def _json_ready(obj: Any) -> Any:
    """numpy arrays to lists and NaN to None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_json_ready(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


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
    from ..calibration import calibration_bins

    run = Run(run_dir).require_finished()
    run.config(), run.metrics(), run.history()  # readable files: all checks before any write
    ev, model, meta, _ = evaluated or evaluate_run(run.path, data_dir)
    evaluation = {
        "run": str(run.path),
        "model": meta["model"],
        "tta": bool(meta.get("tta")),
        "split": "test",
        **ev.metrics,
        "calibration": calibration_bins(ev.probabilities, ev.labels, ev.metrics["ece_bins"]),
    }
    atomic_write_json(run / EVALUATION, _json_ready(evaluation))
    captions = write_figures(run, ev, model, meta["classes"])
    blocks = report_blocks(run, meta, ev, captions)
    atomic_write_bytes(run / REPORT_MD, to_markdown(blocks).encode())
    atomic_write_bytes(run / REPORT_HTML, to_html(blocks, run.path, title(run)).encode())
    card = model_card(run.path.name, meta, run.metrics(), to_markdown(blocks[1:]))
    atomic_write_bytes(run / MODEL_CARD, card.encode())
    return run / REPORT_HTML
