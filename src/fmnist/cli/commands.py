"""The subcommands of `fmnist`: each turns parsed arguments into one library call and prints."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DiskFullError, TrainingInterrupted

# ---------------------------------------------------------------- data


def cmd_data(args: argparse.Namespace) -> int:
    """fmnist data fetch|verify|info."""
    from ..data import FILES, class_counts, locate_all

    found = locate_all(args.data_dir, download_ok=args.action == "fetch" and not args.offline)
    if args.action == "info":
        for name, loc in found.items():
            print(f"{name:26s} {FILES[name].shape!s:17s} sha256 OK  {loc.source:8s} {loc.path}")
        for split, labels in (
            ("train", found["train-labels-idx1-ubyte"].array),
            ("test", found["t10k-labels-idx1-ubyte"].array),
        ):
            counts = class_counts(labels)
            print(f"{split}: {len(labels)} images, per class: {' '.join(map(str, counts))}")
    else:
        for name, loc in found.items():
            print(f"ok  {name}  ({loc.source}: {loc.path})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """fmnist show: a labelled grid of sample images as PNG."""
    from ..data import load_data
    from ..plots import sample_grid, save

    (x, y), (xt, yt) = load_data(args.data_dir)
    images, labels = (x, y) if args.split == "train" else (xt, yt)
    out = save(sample_grid(images, labels, args.per_class, args.seed), args.out)
    print(out)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """fmnist models: the registry with parameters and FLOPs, then the bundled models."""
    from .. import bundled
    from ..models import DESCRIPTIONS, MODELS, count_flops, count_params, create_model

    print(f"{'name':8s} {'params':>10s} {'MFLOP/img':>10s}  description")
    for name in MODELS:
        m = create_model(name)
        print(
            f"{name:8s} {count_params(m):>10,d} {count_flops(m) / 1e6:>10.2f}  "
            f"{DESCRIPTIONS.get(name, '')}"
        )
    print("\nbundled (fmnist predict FILE uses the first; --model NAME picks one):")
    print(f"{'name':8s} {'model':8s} {'test acc':>8s} {'MB':>5s}  real photos (right / photos)")
    for name in bundled.names():
        d = bundled.describe(name)
        photos = ", ".join(f"{k} {v}" for k, v in d["photo_accuracy"].items()) or "not measured"
        print(
            f"{name:8s} {d['model']:8s} {d['test_accuracy']:8.4f} {d['bytes'] / 1e6:5.2f}  {photos}"
        )
    return 0


# ---------------------------------------------------------------- training


def config_from_args(args: argparse.Namespace) -> Any:
    """Build the TrainConfig from --preset (or --config FILE) plus the flags given."""
    from ..config import get_preset, load_config, overrides

    given = overrides(vars(args))
    if args.config and args.preset:
        raise ConfigError(
            f"--preset {args.preset} and --config {args.config} both give the starting "
            "config; give one of them."
        )
    if args.config:
        return load_config(args.config, **given)
    return get_preset(args.preset or "default", **given)


def cmd_train(args: argparse.Namespace) -> int:
    """fmnist train: train a preset (or resume a run) and write a run directory."""
    from ..budget import fit_budget
    from ..config import flags, overrides
    from ..rundir import Run
    from ..training import resume_run, train

    try:
        if args.resume:
            given = [f.option for f in flags() if f.field in overrides(vars(args))]
            given += ["--out"] * bool(args.out) + ["--config"] * bool(args.config)
            given += ["--budget"] * (args.budget is not None)
            if given or args.preset:
                raise ConfigError(
                    f"--resume continues a run with its saved config; drop {given or '--preset'}."
                )
            run_dir = resume_run(args.resume, data_dir=args.data_dir, quiet=args.quiet)
        else:
            cfg = config_from_args(args)
            if args.budget is not None:
                if "epochs" in overrides(vars(args)):
                    raise ConfigError("--budget and --epochs both set the epochs: give one.")
                cfg = fit_budget(cfg, args.budget, args.data_dir)
            run_dir = train(
                cfg,
                out=args.out,
                data_dir=args.data_dir,
                quiet=args.quiet,
                command=shlex.join(["fmnist", *sys.argv[1:]]),
            )
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    finally:
        # Under torchrun: leave the process group before exit. A gloo group left to the
        # interpreter's shutdown can abort a rank ("terminate called without an active
        # exception"), which fails the whole job after training succeeded.
        import torch.distributed as td

        if td.is_available() and td.is_initialized():
            td.destroy_process_group()
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    metrics = Run(run_dir).metrics()
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} "
        f"(best validation accuracy {metrics['best_val_accuracy']:.4f} at epoch "
        f"{metrics['best_epoch']}, {metrics['train_seconds']:.0f} s)"
    )
    if metrics.get("stopped_early"):
        print(f"stopped after epoch {metrics['epochs_trained']}: {metrics['stopped_early']}")
    if not args.no_report:
        from ..report import write_report

        try:
            print(f"report: {write_report(run_dir, data_dir=args.data_dir)}")
        except DiskFullError as e:  # the run itself is finished and complete
            fix = f"free some space, then write the run's report with: fmnist report {run_dir}"
            raise e.with_fix(fix) from None
    print(f"run directory: {run_dir}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """fmnist tune: an Optuna study over training recipes; every trial is a run directory."""
    from pathlib import Path

    from .. import tuning
    from ..storage import shown_url

    base = config_from_args(args)
    study_name = args.study or tuning.default_study_name(base)
    out = Path(args.out) if args.out else tuning.default_out(study_name)
    try:
        study = tuning.tune(
            base,
            args.trials,
            storage=args.storage,
            study_name=study_name,
            out=out,
            search=[n.strip() for n in args.search.split(",")] if args.search else None,
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


# ---------------------------------------------------------------- evaluate, predict


def cmd_evaluate(args: argparse.Namespace) -> int:
    """fmnist evaluate: test loss and accuracy of a model."""
    from ..checkpoint import load_model
    from ..evaluation import score_test
    from ..predict import model_precision
    from ..system import resolve_precision

    model, meta = load_model(args.model)
    precision = resolve_precision(args.precision or model_precision(meta))
    tta = bool(meta.get("tta"))
    m = score_test(model, tta=tta, data_dir=args.data_dir, precision=precision).metrics
    result = {
        "test_accuracy": m["accuracy"],
        "test_loss": m["loss"],
        "images": m["images"],
        "model": meta["model"],
        "precision": precision,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"test accuracy {m['accuracy']:.4f}, test loss {m['loss']:.4f} on {m['images']} "
            f"images ({precision})"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """fmnist predict [RUN_DIR] FILE...: classify image files; or --index N: a test image.

    The model is --model, else a leading run directory or model file (the older form
    `fmnist predict RUN_DIR FILE...`), else the bundled photo model.
    """
    from ..predict import Classifier

    model, args.files = args.model, list(args.inputs)
    leading = model is None and args.files and _is_model(args.files[0])
    if leading:
        model = args.files.pop(0)
    if (args.index is None) == (not args.files):
        raise ConfigError("give image files, folders or globs, or --index N (not both).")
    classifier = Classifier.load(model, min_confidence=args.min_confidence)
    if args.index is not None:
        return _predict_test_image(classifier, args)
    return _predict_files(classifier, args)


def _is_model(arg: str) -> bool:
    """True for a run directory or a model file: what may lead `fmnist predict`'s files."""
    from ..rundir import META, ONNX

    p = Path(arg)
    if p.is_dir():
        return (p / META).is_file() or (p / ONNX).is_file()
    return p.suffix in (".safetensors", ".onnx") and p.is_file()


def _predict_test_image(classifier, args: argparse.Namespace) -> int:
    """Predict test image --index and draw it beside its bars."""
    from ..data import load_data
    from ..plots import prediction_figure, save

    classes = classifier.classes
    _, (x_test, y_test) = load_data(args.data_dir)
    if not 0 <= args.index < len(x_test):
        raise ConfigError(f"--index must be in [0, {len(x_test) - 1}], got {args.index}.")
    image, label = x_test[args.index], int(y_test[args.index])
    probs = classifier.predict_inputs(image[None]).probabilities[0]
    pred = int(probs.argmax())
    print(f"test image {args.index}: true {classes[label]}, predicted {classes[pred]}")
    for name, p in sorted(zip(classes, probs, strict=True), key=lambda t: -t[1]):
        print(f"  {name:12s} {p:.4f}")
    out = args.figure or f"prediction-{args.index}.png"
    save(prediction_figure(image, probs, label, classes), out)
    print(f"figure: {out}")
    return 0


def _predict_files(classifier, args: argparse.Namespace) -> int:
    """One table row (or JSON line) per file, error lines for bad files, then a summary."""
    from collections import Counter

    from ..predict import predict_files

    counts: Counter[str] = Counter()
    failed = unsure = 0
    records = predict_files(
        classifier, args.files, top_k=args.top_k, save_preprocessed=args.save_preprocessed
    )
    for r in records:
        if args.json:
            print(json.dumps(r), flush=True)
        elif "error" in r:
            print(f"fmnist predict: error: {r['path']}: {r['error']}", file=sys.stderr)
        elif r["label"] is None:  # no garment found: an answer, not a failure
            print(f"{'unsure':7s} {'(no garment found)':54s}  {r['path']}", flush=True)
        else:
            top = "  ".join(f"{t['label']:11s} {t['probability']:6.1%}" for t in r["top_k"])
            print(f"{'unsure' if r['unsure'] else 'sure':7s} {top}  {r['path']}", flush=True)
        failed += "error" in r
        unsure += bool(r.get("unsure"))
        counts[r.get("label") or "unsure"] += "error" not in r
    done = sum(counts.values())
    per_class = ", ".join(f"{n} {name}" for name, n in counts.most_common() if n)
    print(
        f"{done + failed} files: {done} predicted ({per_class or 'none'}; {unsure} unsure), "
        f"{failed} failed"
        + (f"; preprocessed images in {args.save_preprocessed}" if args.save_preprocessed else ""),
        file=sys.stderr if args.json else sys.stdout,
    )
    return 1 if failed else 0


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

    limits = ServeLimits(max_upload_bytes=int(args.max_upload_mb * 2**20), timeout=args.timeout)
    run(args.model, host=args.host, port=args.port, limits=limits, workers=args.workers,
        backend=args.backend, metrics=args.metrics)  # fmt: skip
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
    from ..report import compare_runs, compare_table, write_compare_figure

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
