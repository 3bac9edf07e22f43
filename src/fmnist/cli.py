"""The `fmnist` command: argparse subcommands that call the library, nothing else."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


# ---------------------------------------------------------------- data


def cmd_data(args: argparse.Namespace) -> int:
    """fmnist data fetch|verify|info."""
    from .data import FILES, class_counts, locate_all

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
    from .data import load_data
    from .plots import sample_grid, save

    (x, y), (xt, yt) = load_data(args.data_dir)
    images, labels = (x, y) if args.split == "train" else (xt, yt)
    out = save(sample_grid(images, labels, args.per_class, args.seed), args.out)
    print(out)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """fmnist models: the registry with parameters and FLOPs per image."""
    from .models import DESCRIPTIONS, MODELS, count_flops, count_params, create_model

    print(f"{'name':8s} {'params':>10s} {'MFLOP/img':>10s}  description")
    for name in MODELS:
        m = create_model(name)
        print(
            f"{name:8s} {count_params(m):>10,d} {count_flops(m) / 1e6:>10.2f}  "
            f"{DESCRIPTIONS.get(name, '')}"
        )
    return 0


# ---------------------------------------------------------------- training


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override a preset's TrainConfig fields (shared by train-like commands)."""
    # None when not given, so that an explicit `--preset default` beside --config is caught.
    p.add_argument("--preset", help="named preset (default: default)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--val-split", type=open_fraction)
    p.add_argument("--seed", type=nonneg_int)
    p.add_argument("--limit-train", type=positive_int, help="use only the first N images")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--threads", type=nonneg_int, help="torch threads (0 = default)")
    p.add_argument("--config", metavar="FILE", help="start from this JSON config, not a preset")


def config_from_args(args: argparse.Namespace):
    """Build the TrainConfig from --preset (or --config FILE) plus the flags given."""
    from .train import get_preset, load_config

    config = args.config
    if config and args.preset:
        raise ValueError(
            f"--preset {args.preset} and --config {config} both give the starting config; "
            "give one of them."
        )
    overrides = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_split=args.val_split,
        seed=args.seed,
        limit_train=args.limit_train,
        device=args.device,
        threads=args.threads,
    )
    if config:
        return load_config(config, **overrides)
    return get_preset(args.preset or "default", **overrides)


TRAIN_FLAGS = ("epochs", "batch_size", "lr", "val_split", "seed", "limit_train", "device",
               "threads", "out")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    """fmnist train: train a preset (or resume a run) and write a run directory."""
    from .train import TrainingInterrupted, resume_run, train

    try:
        if args.resume:
            given = [f"--{f.replace('_', '-')}" for f in TRAIN_FLAGS if getattr(args, f)]
            given += ["--config"] if args.config else []
            if given or args.preset:
                raise ValueError(
                    f"--resume continues a run with its saved config; drop {given or '--preset'}."
                )
            run_dir = resume_run(args.resume, data_dir=args.data_dir, quiet=args.quiet)
        else:
            run_dir = train(
                config_from_args(args),
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
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} "
        f"(best validation accuracy {metrics['best_val_accuracy']:.4f} at epoch "
        f"{metrics['best_epoch']}, {metrics['train_seconds']:.0f} s)"
    )
    if not args.no_report:
        from .report import write_report

        print(f"report: {write_report(run_dir, data_dir=args.data_dir)}")
    print(f"run directory: {run_dir}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """fmnist tune: an Optuna study over training recipes; every trial is a run directory."""
    from pathlib import Path

    from . import tune as tuning
    from .train import TrainingInterrupted

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
        f"({best.user_attrs.get('run_dir', '?')}); study {study_name} in {args.storage}"
    )
    print(f"best config: {path}; train it with: fmnist train --config {shlex.quote(str(path))}")
    return 0


# ---------------------------------------------------------------- evaluate, predict


def cmd_evaluate(args: argparse.Namespace) -> int:
    """fmnist evaluate: test loss and accuracy of a model."""
    import torch

    from .checkpoint import load_model
    from .data import load_data
    from .evaluate import loss_accuracy, predict_logits

    model, meta = load_model(args.model)
    _, (x_test, y_test) = load_data(args.data_dir)
    logits = predict_logits(model, torch.from_numpy(x_test), tta=bool(meta.get("tta")))
    loss, acc = loss_accuracy(logits, torch.from_numpy(y_test))
    result = {
        "test_accuracy": acc,
        "test_loss": loss,
        "images": len(y_test),
        "model": meta["model"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy {acc:.4f}, test loss {loss:.4f} on {len(y_test)} images")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """fmnist predict MODEL FILE...: classify image files; or --index N: one test image."""
    from .predict import Classifier

    if (args.index is None) == (not args.files):
        raise ValueError("give image files, folders or globs, or --index N (not both).")
    classifier = Classifier.load(args.model)
    if args.index is not None:
        return _predict_test_image(classifier, args)
    return _predict_files(classifier, args)


def _predict_test_image(classifier, args: argparse.Namespace) -> int:
    """Predict test image --index and draw it beside its bars."""
    from .data import load_data
    from .plots import prediction_figure, save

    classes = classifier.classes
    _, (x_test, y_test) = load_data(args.data_dir)
    if not 0 <= args.index < len(x_test):
        raise ValueError(f"--index must be in [0, {len(x_test) - 1}], got {args.index}.")
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

    from .predict import predict_files

    counts: Counter[str] = Counter()
    failed = 0
    records = predict_files(
        classifier, args.files, top_k=args.top_k, save_preprocessed=args.save_preprocessed
    )
    for r in records:
        if args.json:
            print(json.dumps(r), flush=True)
        elif "error" in r:
            print(f"fmnist predict: error: {r['path']}: {r['error']}", file=sys.stderr)
        else:
            top = "  ".join(f"{t['label']:11s} {t['probability']:6.1%}" for t in r["top_k"])
            print(f"{top}  {r['path']}", flush=True)
        failed += "error" in r
        counts[r.get("label", "")] += "error" not in r
    done = sum(counts.values())
    per_class = ", ".join(f"{n} {name}" for name, n in counts.most_common() if n)
    print(
        f"{done + failed} files: {done} predicted ({per_class or 'none'}), {failed} failed"
        + (f"; preprocessed images in {args.save_preprocessed}" if args.save_preprocessed else ""),
        file=sys.stderr if args.json else sys.stdout,
    )
    return 1 if failed else 0


# ---------------------------------------------------------------- export, serve


def cmd_export(args: argparse.Namespace) -> int:
    """fmnist export RUN_DIR: an ONNX file, checked against PyTorch on the test set."""
    from .export import export

    r = export(args.model, args.out, data_dir=args.data_dir)
    print(
        f"parity on {r.images:,d} test images: largest probability difference "
        f"{r.max_prob_diff:.1e}, {r.label_mismatches} different labels ({r.seconds:.1f} s)"
    )
    print(f"wrote {r.path} ({r.bytes / 1e6:.2f} MB)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """fmnist serve MODEL: the HTTP API and its page."""
    from .serve import ServeLimits, run

    limits = ServeLimits(max_upload_bytes=int(args.max_upload_mb * 2**20), timeout=args.timeout)
    run(args.model, host=args.host, port=args.port, limits=limits, workers=args.workers)
    return 0


# ---------------------------------------------------------------- report, compare


def cmd_report(args: argparse.Namespace) -> int:
    """fmnist report RUN_DIR: evaluation.json, figures, report.md and report.html."""
    from .report import write_report

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
    from .report import compare_runs, compare_table, write_compare_figure

    rows = compare_runs(args.run_dirs, data_dir=args.data_dir)
    print(compare_table(rows))
    print(f"validation curves: {write_compare_figure(rows, args.out)}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    """fmnist ensemble RUN_DIR...: average runs' probabilities; score and report it like a run."""
    from .ensemble import ensemble, summary_table

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
        print(
            f"ONNX parity on {r.export.images:,d} test images: largest probability difference "
            f"{r.export.max_prob_diff:.1e}, {r.export.label_mismatches} different labels"
        )
        print(f"wrote {r.export.path} ({r.export.bytes / 1e6:.2f} MB)")
    print(f"ensemble directory: {r.run_dir}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fmnist", description="Fashion-MNIST classification with CNNs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, data=True):
        p = sub.add_parser(name, help=help, description=help)
        if data:
            p.add_argument(
                "--data-dir", help="directory with the four dataset files (or FMNIST_DATA_DIR)"
            )
        p.set_defaults(func=func)
        return p

    p = add("data", cmd_data, "fetch, verify or describe the dataset files")
    p.add_argument("action", choices=["fetch", "verify", "info"])
    p.add_argument("--offline", action="store_true", help="fetch: never download")

    p = add("show", cmd_show, "write a labelled grid of sample images to a PNG")
    p.add_argument("--out", default="samples.png", help="output PNG (default: %(default)s)")
    p.add_argument("--per-class", type=positive_int, default=10)
    p.add_argument("--split", choices=["train", "test"], default="train")
    p.add_argument("--seed", type=nonneg_int, default=0)

    add("models", cmd_models, "list the registered models with parameters and FLOPs", data=False)

    p = add("train", cmd_train, "train a preset and write a run directory")
    add_train_flags(p)
    p.add_argument("--out", help="run directory (default: runs/<time>-<preset>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-report", action="store_true", help="skip report.html at the end")

    p = add("tune", cmd_tune, "search training recipes with Optuna; each trial is a run")
    add_train_flags(p)  # flags given here are fixed for every trial, never sampled
    p.add_argument("--trials", type=positive_int, required=True, help="trials to add now")
    p.add_argument(
        "--storage",
        default="sqlite:///study.db",
        help="SQLAlchemy URL of the study database (default: %(default)s)",
    )
    p.add_argument("--study", help="study name (default: fmnist-<preset>)")
    p.add_argument("--out", help="trial run directories (default: runs/tune-<study>)")
    p.add_argument(
        "--save-best", metavar="FILE", help="best config (default: <out>/best_config.json)"
    )
    p.add_argument(
        "--search",
        metavar="NAME,...",
        help="options to sample (default: all that no flag fixes): optimizer, lr, "
        "weight_decay, batch_size, label_smoothing, flip, translate, erase, ema, dropout",
    )
    p.add_argument(
        "--prune-after",
        type=positive_int,
        default=1,
        metavar="EPOCHS",
        help="never prune a trial before this many epochs (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")

    p = add("evaluate", cmd_evaluate, "test loss and accuracy of a model")
    p.add_argument("model", help="run directory or model.safetensors")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("predict", cmd_predict, "classify image files (photos, folders, globs) or a test image")
    p.add_argument("model", help="run directory, model.safetensors or model.onnx")
    p.add_argument("files", nargs="*", metavar="FILE", help="image files, folders or globs")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes shown per file (3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line and file")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 inputs as PNGs")
    p.add_argument("--index", type=nonneg_int, help="instead: predict this test image, draw it")
    p.add_argument("--figure", help="--index: output PNG (default: prediction-<index>.png)")

    p = add("export", cmd_export, "export a model to ONNX, checked against PyTorch")
    p.add_argument("model", help="run directory or model.safetensors")
    p.add_argument("--out", help="output .onnx file (default: model.onnx beside the weights)")

    p = add("serve", cmd_serve, "serve a model over HTTP with an upload-and-draw page", data=False)
    p.add_argument("model", help="model.onnx (no torch needed), run directory or .safetensors")
    p.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    p.add_argument("--port", type=positive_int, default=8000, help="default: %(default)s")
    p.add_argument("--max-upload-mb", type=positive_float, default=10, help="per image (10)")
    p.add_argument("--timeout", type=positive_float, default=10, help="seconds per request (10)")
    p.add_argument(
        "--workers", type=positive_int, default=1, help="server processes (1); e.g. one per core"
    )

    p = add("report", cmd_report, "write a run's report (report.html, report.md, figures)")
    p.add_argument("run_dir", help="a finished run directory, e.g. runs/latest")

    p = add("compare", cmd_compare, "compare runs: a table and their validation curves")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    p.add_argument("--out", default="compare.png", help="output PNG (default: %(default)s)")

    p = add("ensemble", cmd_ensemble, "average the predictions of runs; report it like a run")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more trained runs")
    p.add_argument("--out", help="ensemble directory (default: runs/<time>-ensemble)")
    p.add_argument("--onnx", metavar="FILE", help="also export the ensemble as one ONNX file")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="flip test-time augmentation (default: on if every member's run uses it)",
    )
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean bad input: reported as one line and exit status 2.

    Looked up among the modules already imported, so that `fmnist serve model.onnx` never
    imports torch (checkpoint and export do): an error type whose module was never
    imported cannot have been raised.
    """
    from .data import DataError

    errors: list[type[Exception]] = [DataError, ValueError, FileNotFoundError]
    for module, name in (
        ("fmnist.checkpoint", "CheckpointError"),
        ("fmnist.export", "ExportError"),
        ("fmnist.tune", "TuneError"),
    ):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        print(f"fmnist {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
