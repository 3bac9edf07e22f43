"""The subcommands beyond the notebook: tune, export, serve, report, compare, ensemble."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import TrainingInterrupted
from ..rundir import output_file
from .workflow import config_from_args


def cmd_tune(args: argparse.Namespace) -> int:
    """fmnist tune: an Optuna study over training recipes; every trial is a run directory."""
    from .. import tuning
    from ..storage import shown_url

    base = config_from_args(args)
    if args.save_best:
        output_file(args.save_best, (".json",))  # said now, not after the study
    study_name = args.study or tuning.default_study_name(base)
    out = Path(args.out) if args.out else tuning.default_out(study_name)
    try:
        study = tuning.tune(
            base,
            args.trials,
            storage=args.storage,
            study_name=study_name,
            out=out,
            search=None if args.search is None else [n.strip() for n in args.search.split(",")],
            fixed=[n for n in tuning.SPACE if getattr(args, n, None) is not None],  # --lr
            prune_after=args.prune_after,
            heartbeat=args.heartbeat,
            data_dir=args.data_dir,
            quiet=args.quiet,
            command=shlex.join(["fmnist", *sys.argv[1:]]),
        )
    except TrainingInterrupted as e:
        print(f"{e}\nThe study keeps its other trials; run the same command to add more.",
              file=sys.stderr)  # fmt: skip
        return 130
    print(tuning.trials_table(study))
    best = tuning.best_trial(study)
    if best is None:
        print(f"study {study_name}: no trial has finished yet", file=sys.stderr)
        return 1
    path = tuning.save_best(study, args.save_best or out / "best_config.json")
    print(
        f"best: trial {best.number}, validation accuracy {best.value:.4f} "
        f"({best.user_attrs.get('run_dir', '?')}); study {study_name} in "
        f"{shown_url(args.storage)}"
    )
    print(f"best config: {path}; train it with: fmnist train --config {shlex.quote(str(path))}")
    return 0


# ---------------------------------------------------------------- export, serve


def cmd_export(args: argparse.Namespace) -> int:
    """fmnist export RUN_DIR: an ONNX file, checked against PyTorch on the test set."""
    from ..export import export

    r = export(args.model, args.out, data_dir=args.data_dir, int8=args.int8)
    _print_export(r, f" ({r.seconds:.1f} s)")
    return 0


def _print_export(r: Any, timing: str = "") -> None:
    """The parity check of an ONNX export and where it was written."""
    if r.precision == "int8":
        print(
            f"int8 ONNX on {r.images:,d} test images: {1 - r.label_mismatches / r.images:.2%} of "
            f"labels as PyTorch's, accuracy {r.accuracy:.4f} (PyTorch {r.reference_accuracy:.4f})"
            f"{timing}"
        )
    else:
        print(
            f"ONNX parity on {r.images:,d} test images: largest probability difference "
            f"{r.max_prob_diff:.1e}, {r.label_mismatches} different labels{timing}"
        )
    print(f"wrote {r.path} ({r.bytes / 1e6:.2f} MB)")


def cmd_serve(args: argparse.Namespace) -> int:
    """fmnist serve MODEL: the HTTP API and its page."""
    from ..serve import ServeLimits, run
    from . import rule_from_args

    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 2**20), timeout=args.timeout, heif=args.heif
    )
    run(args.model, host=args.host, port=args.port, limits=limits, workers=args.workers,
        backend=args.backend, metrics=args.metrics, rule=rule_from_args(args))  # fmt: skip
    return 0


# ---------------------------------------------------------------- report, compare


def cmd_report(args: argparse.Namespace) -> int:
    """fmnist report RUN_DIR: evaluation.json, figures, report.md and report.html."""
    from ..report import write_report

    html = write_report(args.run_dir, data_dir=args.data_dir)
    ev = json.loads((html.parent / "evaluation.json").read_text())
    print(
        f"test accuracy {ev['accuracy']:.4f}, top-2 {ev['top2_accuracy']:.4f}, "
        f"loss {ev['loss']:.4f}, ECE {ev['ece']:.4f}, macro F1 {ev['macro_f1']:.4f}"
    )
    print(f"report: {html} and {html.with_suffix('.md')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """fmnist compare RUN_DIR...: a table of the runs and one figure of their curves."""
    from ..plots import figure_path
    from ..report import compare_runs, compare_table, write_compare_figure

    figure_path(args.out)  # before the runs are scored, as the figure's save will check it
    rows = compare_runs(args.run_dirs, data_dir=args.data_dir)
    print(compare_table(rows))
    print(f"validation curves: {write_compare_figure(rows, args.out)}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    """fmnist ensemble RUN_DIR...: average runs' probabilities; score and report it like a run."""
    from ..ensemble import ensemble, summary_table

    r = ensemble(args.run_dirs, args.out, onnx=args.onnx, tta=args.tta, data_dir=args.data_dir)
    print(summary_table(r))
    m = r.metrics
    tta = "with flip TTA" if r.tta else "without TTA"
    print(
        f"ensemble of {len(r.members)} runs {tta}: test accuracy {m['accuracy']:.4f}, "
        f"loss (NLL) {m['loss']:.4f}, ECE {m['ece']:.4f} on {m['images']:,d} test images"
    )
    print(f"report: {r.report}")
    if r.export is not None:
        _print_export(r.export)
    print(f"ensemble directory: {r.run_dir}")
    return 0
