"""Several finished runs side by side: a text table and their validation curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..rundir import EVALUATION, Run, read_json


def compare_runs(
    run_dirs: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """One row per finished run: preset, model, params, epochs, time, accuracy, ECE, history.

    The ECE comes from the run's evaluation.json when `fmnist report` wrote one; otherwise
    the model is scored on the test set now (a few seconds for small models).
    """
    from . import evaluate_run

    if not run_dirs:
        raise RunDirError("compare needs at least one run directory, got none.")
    seen = [Path(d).resolve() for d in run_dirs]
    twice = sorted({str(d) for d, p in zip(run_dirs, seen, strict=True) if seen.count(p) > 1})
    if twice:
        raise RunDirError(f"{', '.join(twice)}: the same run given twice; give each run once.")
    rows = []
    for d in run_dirs:
        run = Run(d).require_finished()
        config, metrics = run.config(), run.metrics()
        if (run / EVALUATION).is_file():
            ece = read_json(run / EVALUATION)["ece"]
        else:
            ece = evaluate_run(run.path, data_dir)[0].metrics["ece"]
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
                "history": run.history(),
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
    from ..plots import compare_figure, save

    return save(compare_figure({r["run"]: r["history"] for r in rows}), out)
