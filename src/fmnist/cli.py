"""The `fmnist` command: argparse subcommands that call the library, nothing else."""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--preset", default="default", help="named preset (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--val-split", type=open_fraction)
    p.add_argument("--seed", type=nonneg_int)
    p.add_argument("--limit-train", type=positive_int, help="use only the first N images")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--threads", type=nonneg_int, help="torch threads (0 = default)")


def config_from_args(args: argparse.Namespace):
    """Build the TrainConfig from --preset plus the flags given."""
    from .train import get_preset

    return get_preset(
        args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_split=args.val_split,
        seed=args.seed,
        limit_train=args.limit_train,
        device=args.device,
        threads=args.threads,
    )


TRAIN_FLAGS = ("epochs", "batch_size", "lr", "val_split", "seed", "limit_train", "device",
               "threads", "out")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    """fmnist train: train a preset (or resume a run) and write a run directory."""
    from .train import TrainingInterrupted, resume_run, train

    try:
        if args.resume:
            given = [f"--{f.replace('_', '-')}" for f in TRAIN_FLAGS if getattr(args, f)]
            if given or args.preset != "default":
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
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} "
        f"(best validation accuracy {metrics['best_val_accuracy']:.4f} at epoch "
        f"{metrics['best_epoch']}, {metrics['train_seconds']:.0f} s)"
    )
    print(f"run directory: {run_dir}")
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
    """fmnist predict MODEL --index N: predict one test image and draw it beside its bars."""
    import torch

    from .checkpoint import load_model
    from .data import load_data
    from .evaluate import predict_logits
    from .plots import prediction_figure, save

    model, meta = load_model(args.model)
    classes = meta["classes"]
    _, (x_test, y_test) = load_data(args.data_dir)
    if not 0 <= args.index < len(x_test):
        raise ValueError(f"--index must be in [0, {len(x_test) - 1}], got {args.index}.")
    image, label = x_test[args.index], int(y_test[args.index])
    logits = predict_logits(model, torch.from_numpy(image[None]), tta=bool(meta.get("tta")))
    probs = torch.softmax(logits.float(), 1)[0].numpy()
    pred = int(probs.argmax())
    print(f"test image {args.index}: true {classes[label]}, predicted {classes[pred]}")
    for name, p in sorted(zip(classes, probs, strict=True), key=lambda t: -t[1]):
        print(f"  {name:12s} {p:.4f}")
    out = args.figure or f"prediction-{args.index}.png"
    save(prediction_figure(image, probs, label, classes), out)
    print(f"figure: {out}")
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

    p = add("evaluate", cmd_evaluate, "test loss and accuracy of a model")
    p.add_argument("model", help="run directory or model.safetensors")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("predict", cmd_predict, "predict a test image (--index) and draw its probabilities")
    p.add_argument("model", help="run directory or model.safetensors")
    p.add_argument("--index", type=nonneg_int, required=True, help="test image index")
    p.add_argument("--figure", help="output PNG (default: prediction-<index>.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` console script."""
    from .checkpoint import CheckpointError
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"fmnist {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
