"""The notebook's steps as subcommands: data, show, models, train, evaluate, predict.

Each turns parsed arguments into one library call and prints; the other subcommands are
in fmnist.cli.tools.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DiskFullError, TrainingInterrupted

if TYPE_CHECKING:
    from ..predict import Classifier

# ---------------------------------------------------------------- data


def cmd_data(args: argparse.Namespace) -> int:
    """fmnist data fetch|verify|info."""
    from ..data import FILES, class_counts
    from ..sources import locate_all

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
    from . import rule_from_args

    model, args.files = args.model, list(args.inputs)
    leading = model is None and args.files and _is_model(args.files[0])
    if leading:
        model = args.files.pop(0)
    if (args.index is None) == (not args.files):
        raise ConfigError("give image files, folders or globs, or --index N (not both).")
    classifier = Classifier.load(model, **rule_from_args(args))
    if args.index is not None:
        return _predict_test_image(classifier, args)
    return _predict_files(classifier, args)


def _is_model(arg: str) -> bool:
    """True for a run directory or a model file: what may lead `fmnist predict`'s files."""
    from ..rundir import CONFIG, META, ONNX, WEIGHTS

    p = Path(arg)
    if p.is_dir():  # a damaged run too: its load then says what is missing
        return any((p / name).is_file() for name in (META, ONNX, WEIGHTS, CONFIG))
    return p.suffix in (".safetensors", ".onnx") and p.is_file()


def _predict_test_image(classifier: Classifier, args: argparse.Namespace) -> int:
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
    out = args.figure  # defaulted and checked by cli.check_predict_flags
    save(prediction_figure(image, probs, label, classes), out)
    print(f"figure: {out}")
    return 0


def _predict_files(classifier: Classifier, args: argparse.Namespace) -> int:
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
        counts[r.get("label") or "no garment"] += "error" not in r
    done = sum(counts.values())
    per_class = ", ".join(f"{n} {name}" for name, n in counts.most_common() if n)
    print(
        f"{done + failed} files: {done} predicted ({per_class or 'none'}; {unsure} unsure), "
        f"{failed} failed"
        + (f"; preprocessed images in {args.save_preprocessed}" if args.save_preprocessed else ""),
        file=sys.stderr if args.json else sys.stdout,
    )
    return 1 if failed else 0
