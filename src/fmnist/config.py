"""The training config: one dataclass with a commented default per field, the named
presets built from it, config files, and the table of command-line flags derived from it.

No torch here: the CLI builds its flags and checks a config before anything heavy loads.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ConfigError, not_a_file


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run directory."""

    preset: str = "seed"  # name of the preset this config started from
    model: str = "seed"  # registry name, see `fmnist models`
    model_args: dict[str, Any] = field(default_factory=dict)  # constructor arguments
    epochs: int = 10  # passes over the training split
    patience: int = 0  # stop once validation accuracy has not improved for N epochs (0: never)
    batch_size: int = 32  # images per optimisation step (per process under torchrun)
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # adam | adamw | sgd (SGD uses Nesterov momentum)
    momentum: float = 0.9  # SGD momentum (ignored by Adam/AdamW)
    weight_decay: float = 0.0  # L2 (adam, sgd) or decoupled (adamw) weight decay
    schedule: str = "constant"  # constant | onecycle | cosine (per step)
    warmup: float = 0.0  # fraction of all steps spent warming up (cosine, onecycle)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    normalize: bool = False  # standardise pixels with the training mean/std (else [0, 1])
    flip: float = 0.0  # probability of a horizontal flip per image
    translate: int = 0  # maximum random shift in pixels (pad and crop)
    erase: float = 0.0  # probability of random erasing per image
    photo: float = 0.0  # probability of photo-domain augmentation per image (photoaug.photo)
    ema: float = 0.0  # decay of the exponential moving average of weights (0 = off)
    tta: bool = False  # evaluate with flip test-time augmentation
    calibrate: bool = False  # fit a temperature on the validation split (probabilities only)
    scale_lr: str = "none"  # none | linear: multiply lr by the number of torchrun processes
    sync_bn: bool = False  # torchrun on GPUs: batch-norm statistics over all processes' shards
    val_split: float = 0.2  # fraction of the 60,000 training images held out
    limit_train: int | None = None  # use only the first N training images (quick runs)
    seed: int = 0  # seeds the split, the initialisation, shuffling and augmentation
    eval_batch_size: int = 256  # images per batch when evaluating (256: fastest on CPUs)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU
    tensorboard: bool = False  # write TensorBoard event files to RUN_DIR/tensorboard/
    precision: str = "auto"  # auto | fp32 | bf16; auto: bf16 autocast where the chip has bf16 units
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # torch intra-op threads (0 = torch's default)

    def __post_init__(self) -> None:
        if wrong := _config_type_errors(asdict(self)):  # the Python API's values too
            raise ConfigError(f"TrainConfig: {'; '.join(wrong)}.")
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1", self.epochs),
            (self.patience >= 0, "patience", "an integer >= 0 (0: no early stop)", self.patience),
            (self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size),
            (0 < self.val_split < 1, "val_split", "a fraction in (0, 1)", self.val_split),
            (0 < self.lr < INF, "lr", "a positive finite number", self.lr),
            (self.optimizer in OPTIMIZERS, "optimizer", " | ".join(OPTIMIZERS), self.optimizer),
            (self.schedule in SCHEDULES, "schedule", " | ".join(SCHEDULES), self.schedule),
            (0 <= self.warmup < 1, "warmup", "a fraction in [0, 1)", self.warmup),
            (0 <= self.ema < 1, "ema", "a decay in [0, 1)", self.ema),
            (0 <= self.momentum < 1, "momentum", "a number in [0, 1)", self.momentum),
            (0 <= self.weight_decay < INF, "weight_decay", "finite and >= 0", self.weight_decay),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)", self.label_smoothing),
            (0 <= self.flip <= 1, "flip", "a probability in [0, 1]", self.flip),
            (0 <= self.translate <= 13, "translate", "an integer in [0, 13]", self.translate),
            (0 <= self.erase <= 1, "erase", "a probability in [0, 1]", self.erase),
            (0 <= self.photo <= 1, "photo", "a probability in [0, 1]", self.photo),
            (self.seed >= 0, "seed", "an integer >= 0", self.seed),
            (self.threads >= 0, "threads", "an integer >= 0 (0: torch's default)", self.threads),
            (self.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1", self.eval_batch_size),
            (re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None, "device",
             "auto | cpu | cuda | cuda:N | mps", self.device),
            (self.scale_lr in ("none", "linear"), "scale_lr", "none | linear", self.scale_lr),
            (self.precision in PRECISIONS, "precision", " | ".join(PRECISIONS), self.precision),
            (self.limit_train is None or self.limit_train >= 2, "limit_train",
             "an integer >= 2 or None", self.limit_train),
        ]  # fmt: skip
        for ok, name, expected, found in checks:
            if not ok:
                raise ConfigError(f"TrainConfig.{name} must be {expected}, got {found!r}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. a saved config.json), refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown config keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**d)


_JSON_TYPES = {str: "string", int: "number", float: "number", bool: "true/false",
               type(None): "null", list: "array", dict: "object"}  # fmt: skip


def _config_type_errors(d: dict[str, Any]) -> list[str]:
    """Fields of ``d`` whose JSON type does not fit TrainConfig (ints pass for floats)."""

    def fits(value: Any, hint: Any) -> bool:
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            return any(fits(value, h) for h in typing.get_args(hint))
        if typing.get_origin(hint) is dict:
            return isinstance(value, dict) and all(isinstance(k, str) for k in value)
        if hint is float:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return hint is Any or isinstance(value, hint)

    def name(hint: Any) -> str:
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            return " or ".join(name(h) for h in typing.get_args(hint))
        if typing.get_origin(hint) is dict:
            return "an object"
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                type(None): "null"}.get(hint, str(hint))  # fmt: skip

    hints = typing.get_type_hints(TrainConfig)
    return [
        f"{k} must be {name(hints[k])}, found {json.dumps(v)} "
        f"({_JSON_TYPES.get(type(v), type(v).__name__)})"
        for k, v in d.items()
        if k in hints and not fits(v, hints[k])
    ]


INF = float("inf")
OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("auto", "fp32", "bf16")  # fmnist.system.PRECISIONS, without importing torch
SCHEDULES = ("constant", "onecycle", "cosine")

PRESETS: dict[str, TrainConfig] = {
    # The notebook's recipe exactly: Adam 1e-3, batch 32, 10 epochs, split 0.2, [0, 1] input.
    "seed": TrainConfig(preset="seed"),
    # What `fmnist train` and `make demo` run: 93 % in under 3 minutes on 2 CPU cores. Short
    # training favours light augmentation: shifts of 1 pixel beat 2 on the validation split.
    "default": TrainConfig(
        preset="default", model="fast", epochs=8, batch_size=128, optimizer="adamw", lr=4e-3,
        weight_decay=0.05, schedule="onecycle", warmup=0.2, label_smoothing=0.1,
        normalize=True, flip=0.5, translate=1, tta=True, calibrate=True, val_split=0.1,
    ),
    # The notebook's accuracy (0.91) in about 20 s on 2 CPU cores: the default recipe for 2
    # epochs, without the 1-pixel shifts, which two epochs are too few to profit from
    # (validation 0.9218-0.9238 without them, 0.9157-0.9177 with, seeds 0-2).
    "quick": TrainConfig(
        preset="quick", model="fast", epochs=2, batch_size=128, optimizer="adamw", lr=4e-3,
        weight_decay=0.05, schedule="onecycle", warmup=0.2, label_smoothing=0.1,
        normalize=True, flip=0.5, translate=0, tta=True, calibrate=True, val_split=0.1,
    ),
    # The bundled photo model: the default recipe on half photo-like images (photoaug), wider
    # and longer (validation 0.9344, seeds 0-3; 0.9313 with 12 epochs, 0.9295 also narrower).
    "photo": TrainConfig(
        preset="photo", model="fast", model_args={"widths": [32, 64, 128], "hidden": 192},
        epochs=16, batch_size=128, optimizer="adamw", lr=4e-3, weight_decay=0.05,
        schedule="onecycle", warmup=0.2, label_smoothing=0.1, normalize=True, flip=0.5,
        translate=1, photo=0.5, tta=True, calibrate=True, val_split=0.1,
    ),
    # The strongest single model: a ResNet-20, random erasing; 24 epochs fit an hour (Zen 3).
    "best": TrainConfig(
        preset="best", model="resnet", epochs=24, batch_size=128, optimizer="sgd", lr=0.1,
        momentum=0.9, weight_decay=5e-4, schedule="onecycle", warmup=0.15,
        label_smoothing=0.1, normalize=True, flip=0.5, translate=2, erase=0.5, ema=0.999,
        tta=True, calibrate=True, val_split=0.1,
    ),
}  # fmt: skip


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """Return a copy of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}.")
    return TrainConfig.from_dict(_apply(asdict(PRESETS[name]), overrides))


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the ``overrides`` given (not None); another model drops model_args."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("model", base["model"]) != base["model"]:
        base = {**base, "model_args": {}}  # the old model's arguments; --model-args replaces
    return {**base, **given}


def load_config(path: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """Read a TrainConfig from a JSON file such as a run's config.json; apply ``overrides``.

    The file has the format of the config.json in every run directory (and of the
    best_config.json that `fmnist tune` writes). Keys it leaves out come from the preset
    its ``preset`` key names, if that is a known preset, else from TrainConfig's defaults.
    Overrides that are None are ignored (flags not given).
    """
    path = Path(path)
    hint = (
        "Expected a JSON object of TrainConfig fields like a run directory's config.json, "
        "e.g. runs/latest/config.json or the best_config.json written by `fmnist tune`"
    )
    if not path.is_file():
        raise ConfigError(f"Config file {path} {not_a_file(path)}. {hint}.")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"Config file {path} is not valid JSON ({e}). {hint}.") from None
    if not isinstance(d, dict):
        found = _JSON_TYPES.get(type(d), type(d).__name__)
        raise ConfigError(f"Config file {path} holds a JSON {found}, not an object. {hint}.")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(
            f"Config file {path} has unknown keys {unknown}; valid keys: {sorted(known)}. "
            "Fix the spelling or remove them."
        )
    errors = _config_type_errors(d)
    if errors:
        raise ConfigError(
            f"Config file {path} has values of the wrong type: {'; '.join(errors)}. "
            "Fix them in the file."
        )
    floats = {f.name for f in fields(TrainConfig) if f.type in ("float", float)}
    d = {k: float(v) if k in floats else v for k, v in d.items()}  # 1 -> 1.0, as runs write
    preset = d.get("preset")
    merged = asdict(PRESETS[preset] if preset in PRESETS else TrainConfig())
    merged.update(d)
    try:
        return TrainConfig.from_dict(_apply(merged, overrides))
    except ConfigError as e:
        raise ConfigError(f"Config file {path}: {e} Fix the value in the file.") from None


# ---------------------------------------------------------------- the flag table


@dataclass(frozen=True)
class Flag:
    """One TrainConfig field as a command-line flag: ``--name-with-dashes``."""

    field: str  # the TrainConfig field
    kind: str  # int | float | str | bool | json (how the flag's text is read)
    help: str  # the field's comment in TrainConfig

    @property
    def option(self) -> str:
        """The flag as typed, e.g. --batch-size."""
        return "--" + self.field.replace("_", "-")


_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


@cache
def flags() -> tuple[Flag, ...]:
    """Every TrainConfig field but ``preset`` as a flag, its help text the field's comment."""
    comments = dict(
        re.findall(r"^    (\w+): [^#\n]*#\s*(.+)$", inspect.getsource(TrainConfig), re.M)
    )
    table = []
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue  # --preset picks the starting config itself
        hint = typing.get_type_hints(TrainConfig)[f.name]
        args = [h for h in typing.get_args(hint) if h is not type(None)]
        base = args[0] if typing.get_origin(hint) in (types.UnionType, typing.Union) else hint
        kind = "json" if typing.get_origin(base) is dict else _KINDS[base]
        table.append(Flag(f.name, kind, comments[f.name]))
    return tuple(table)


def overrides(values: dict[str, Any]) -> dict[str, Any]:
    """The config fields among ``values`` (e.g. vars(args)) that were given (not None)."""
    return {f.field: values[f.field] for f in flags() if values.get(f.field) is not None}


def command_flags(config: dict[str, Any]) -> list[str] | None:
    """Flags that turn ``config``'s preset into ``config``, or None for an unknown preset."""
    preset = PRESETS.get(config.get("preset", ""))
    if preset is None:
        return None
    base = asdict(preset)
    args = ["--preset", config["preset"]]
    for f in flags():
        v = config.get(f.field, base[f.field])
        if v == base[f.field] or f.field == "device":
            continue
        if v is None:
            return None  # e.g. limit_train back to None: no flag says it
        if f.kind == "bool":
            args.append(f.option if v else "--no-" + f.option[2:])
        else:
            args += [f.option, json.dumps(v) if f.kind == "json" else str(v)]
    return args
