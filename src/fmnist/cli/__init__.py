"""The `fmnist` command: argparse subcommands that call the library, nothing else.

The training flags are generated from fmnist.config (one per TrainConfig field); the
commands themselves live in fmnist.cli.workflow (the notebook's steps) and
fmnist.cli.tools (the rest). An FmnistError is printed as one line
with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError, FmnistError
from ..storage import HEARTBEAT_SECONDS
from .tools import cmd_compare, cmd_ensemble, cmd_export, cmd_report, cmd_serve, cmd_tune
from .workflow import cmd_data, cmd_evaluate, cmd_models, cmd_predict, cmd_show, cmd_train


def _bounded(
    convert: Callable[[str], Any],
    low: float,
    strict: bool,
    expected: str,
    high: float = float("inf"),
) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, refused unless above (or at) ``low`` and at or
    under ``high``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        finite = not isinstance(value, float) or math.isfinite(value)  # an int is: any size
        if not finite or value < low or (strict and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = _bounded(int, 1, False, "an integer >= 1")
nonneg_int = _bounded(int, 0, False, "an integer >= 0")
positive_float = _bounded(float, 0.0, True, "a finite number > 0")


def folder_path(text: str) -> str:
    """argparse type: a folder path, refused when empty (an empty --out meant runs/)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty one")
    return text


# ---------------------------------------------------------------- training flags


_KIND_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _json_value(text: str) -> Any:
    """argparse type: a JSON object such as '{"widths": [8, 16, 32]}' (model arguments)."""
    example = "'{\"dropout\": 0.2}'"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        message = f"expected JSON, e.g. {example}, got {text!r} ({e})"
        raise argparse.ArgumentTypeError(message) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. {example}, got {text!r}")
    fixed = sorted({"input_shape", "num_classes"} & set(value))
    if fixed:  # a model of 3 classes failed in the loss, with an IndexError
        raise argparse.ArgumentTypeError(
            f"{', '.join(fixed)} cannot be set: the data fixes them (1x28x28 images, 10 "
            f"classes); got {text!r}"
        )
    return value


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as a flag (fmnist.config.flags); values checked by the config."""
    from ..config import flags

    # None when not given, so that an explicit `--preset default` beside --config is caught.
    p.add_argument("--preset", help="named preset (default: default)")
    p.add_argument("--config", metavar="FILE", help="start from this JSON config, not a preset")
    group = p.add_argument_group("training config (each overrides the preset's value)")
    for f in flags():
        if f.kind == "bool":
            group.add_argument(f.option, action=argparse.BooleanOptionalAction, help=f.help)
        else:
            kind = _json_value if f.kind == "json" else _KIND_TYPES[f.kind]
            group.add_argument(f.option, type=kind, metavar=f.kind.upper(), help=f.help)


# ---------------------------------------------------------------- parser


AddCommand = Callable[..., argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fmnist", description="Fashion-MNIST classification with CNNs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, data: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if data:
            p.add_argument(
                "--data-dir", help="directory with the four dataset files (or FMNIST_DATA_DIR)"
            )
        p.set_defaults(func=func)
        return p

    _data_commands(add)
    _training_commands(add)
    for commands in (_model_commands, _serving_commands, _report_commands):
        commands(add)
    return parser


def _data_commands(add: AddCommand) -> None:
    """data, show, models."""
    p = add("data", cmd_data, "fetch, verify or describe the dataset files")
    p.add_argument("action", choices=["fetch", "verify", "info"])
    p.add_argument("--offline", action="store_true", help="fetch: never download")

    p = add("show", cmd_show, "write a labelled grid of sample images to a PNG")
    p.add_argument("--out", default="samples.png", help="output PNG (default: %(default)s)")
    p.add_argument(
        "--per-class",
        type=_bounded(int, 1, False, "an integer in [1, 100]", high=100),
        default=10,
        help="images per class, 1-100 (default: %(default)s)",
    )
    p.add_argument("--split", choices=["train", "test"], default="train")
    p.add_argument("--seed", type=nonneg_int, default=0)

    add("models", cmd_models, "list the registered models with parameters and FLOPs", data=False)


def _training_commands(add: AddCommand) -> None:
    """train, tune."""
    p = add("train", cmd_train, "train a preset and write a run directory")
    add_train_flags(p)
    p.add_argument("--out", type=folder_path, help="run directory (default: runs/<time>-<preset>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="time a few steps here, then set the epochs so that the timing, training and "
        "the test score end within MINUTES (the report comes after)",
    )
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
    p.add_argument(
        "--heartbeat",
        type=positive_int,
        default=HEARTBEAT_SECONDS,
        metavar="SECONDS",
        help="a running trial's sign of life in the storage; a trial silent for three beats "
        "is failed and retried once (default: %(default)s)",
    )
    p.add_argument(
        "--out", type=folder_path, help="trial run directories (default: runs/tune-<study>)"
    )
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


def _model_commands(add: AddCommand) -> None:
    """evaluate, predict."""
    p = add("evaluate", cmd_evaluate, "test loss and accuracy of a model")
    p.add_argument("model", help="run directory or model.safetensors")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="auto: bf16 where the CPU has bf16 units (default: the precision it trained with)",
    )

    p = add("predict", cmd_predict, "classify image files (photos, folders, globs) or a test image")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="FILE",
        help="image files, folders or globs; a leading run directory or model file is the model",
    )
    p.add_argument(
        "--model",
        help="run directory, model.safetensors, model.onnx or a bundled model's name "
        "(default: the bundled photo model; see `fmnist models`)",
    )
    top_k = _bounded(int, 1, False, "an integer in [1, 10], one per class", high=10)
    p.add_argument("--top-k", type=top_k, default=3, help="classes shown per file, 1-10 (3)")
    add_rule_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line and file")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 inputs as PNGs")
    p.add_argument("--index", type=nonneg_int, help="instead: predict this test image, draw it")
    p.add_argument("--figure", help="--index: output PNG (default: prediction-<index>.png)")


def add_rule_flags(p: argparse.ArgumentParser) -> None:
    """The unsure rule's and the photo rule's flags, the same for predict and serve."""
    p.add_argument(
        "--min-confidence",
        type=float,
        metavar="P",
        help="answers whose top probability is below P are marked unsure; P applies to "
        "every class (default: the model's own thresholds, one per class, else 0.5)",
    )
    p.add_argument(
        "--no-photo-offsets",
        action="store_true",
        help="leave out the model's photo offsets (fitted on development photos of clothes "
        "on floors and beds; see `fmnist models`)",
    )
    p.add_argument(
        "--no-photo-shifts",
        action="store_true",
        help="predict each picture once, not also moved by one pixel each way and averaged",
    )


def rule_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """--min-confidence, --no-photo-offsets, --no-photo-shifts as Classifier.load takes them."""
    return {  # None: the model's own
        "min_confidence": args.min_confidence,
        "photo_offsets": 0 if args.no_photo_offsets else None,
        "photo_shifts": False if args.no_photo_shifts else None,
    }


def _serving_commands(add: AddCommand) -> None:
    """export, serve."""
    p = add("export", cmd_export, "export a model to ONNX, checked against PyTorch")
    p.add_argument("model", help="run directory or model.safetensors")
    p.add_argument(
        "--out",
        help="output .onnx file (default: model.onnx, or model.int8.onnx, beside the weights)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="statically quantised to int8 (calibrated on training images), checked on the "
        "test set: >= 99.5 %% of labels as PyTorch's, accuracy down by <= 0.3 points",
    )

    p = add("serve", cmd_serve, "serve a model over HTTP with an upload-and-draw page", data=False)
    p.add_argument(
        "model",
        nargs="?",
        help="run directory, .safetensors, model.onnx (no torch needed) or a bundled model's "
        "name (default: the bundled model); served through ONNX Runtime",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    port = _bounded(int, 1, False, "a port number in [1, 65535]", high=65535)
    p.add_argument("--port", type=port, default=8000, help="default: %(default)s")
    p.add_argument("--max-upload-mb", type=positive_float, default=10, help="per image (10)")
    p.add_argument("--timeout", type=positive_float, default=10, help="seconds per request (10)")
    p.add_argument(
        "--heif",
        action="store_true",
        help="also decode HEIC and AVIF uploads; their decoders trust the image size in the "
        "file's header, which a crafted upload can fake: for uploads you trust",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        help="server processes (default: one per core this process may use; 1 on Windows)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="auto (default): ONNX Runtime, exporting a checkpoint on the fly (checked, "
        "cached); PyTorch only when that fails, with the reason logged",
    )
    p.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="no Prometheus counters and no /metrics endpoint",
    )
    add_rule_flags(p)


def _report_commands(add: AddCommand) -> None:
    """report, compare, ensemble."""
    p = add("report", cmd_report, "write a run's report, its figures and its model card")
    p.add_argument("run_dir", help="a finished run directory, e.g. runs/latest")

    p = add("compare", cmd_compare, "compare runs: a table and their validation curves")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    p.add_argument("--out", default="compare.png", help="output PNG (default: %(default)s)")

    p = add("ensemble", cmd_ensemble, "average the predictions of runs; report it like a run")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more trained runs")
    p.add_argument(
        "--out", type=folder_path, help="ensemble directory (default: runs/<time>-ensemble)"
    )
    p.add_argument("--onnx", metavar="FILE", help="also export the ensemble as one ONNX file")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="flip test-time augmentation (default: on if every member's run uses it)",
    )


def check_predict_flags(args: argparse.Namespace) -> None:
    """Refuse `fmnist predict` flags that the form it was given would ignore, and a
    --figure that cannot be written (before the model is loaded)."""
    if args.command != "predict":
        return
    if args.index is None:
        if args.figure:
            raise ConfigError(
                "--figure draws test image --index N; for image files, --save-preprocessed DIR "
                "writes what the model saw."
            )
        return
    given = {"--json": args.json, "--save-preprocessed": args.save_preprocessed,
             "--min-confidence": args.min_confidence}  # fmt: skip
    ignored = [flag for flag, value in given.items() if value not in (None, False)]
    if ignored:
        raise ConfigError(
            f"{' and '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} to image "
            f"files; --index N prints test image N's ten "
            f"probabilities and draws them (--figure). Drop {' and '.join(ignored)}, or give "
            "image files instead of --index."
        )
    from ..plots import figure_path

    args.figure = str(figure_path(args.figure or f"prediction-{args.index}.png"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` console script."""
    args = build_parser().parse_args(argv)
    try:
        check_predict_flags(args)
        return args.func(args)
    except FmnistError as e:
        print(f"fmnist {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
