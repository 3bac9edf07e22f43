"""Hyper-parameter studies with Optuna: `fmnist tune`.

A study samples recipe options of :class:`~fmnist.config.TrainConfig`, trains every trial as
an ordinary run directory (``<out>/trial-<number>``) and maximises the best validation
accuracy of the run. The test set plays no part in the choice (each run still scores it
once at its end, as every run does).

Search space (an option fixed on the command line, such as ``--lr`` or ``--batch-size``, is
not sampled; ``--search NAME,...`` samples only the names given)::

    optimizer        adam | adamw | sgd
    lr               log-uniform: 3e-4 .. 1e-2 for adam and adamw, 1e-2 .. 0.3 for sgd
    weight_decay     log-uniform: 1e-4 .. 0.1 for adamw (decoupled), 1e-6 .. 1e-3 for adam
                     and sgd (L2)
    batch_size       32 | 64 | 128 | 256
    label_smoothing  uniform 0 .. 0.2
    flip             0 | 0.5 (probability of a horizontal flip)
    translate        integer 0 .. 3 (pixels)
    erase            uniform 0 .. 0.5 (probability of random erasing)
    ema              0 | 0.99 | 0.999 (0 = no moving average of the weights)
    dropout          uniform 0 .. 0.5, in model_args (only models that take it: seed, fast)

The learning-rate and weight-decay ranges follow the optimizer the trial uses (sampled or
fixed). Everything else (model, epochs, schedule, seed, split...) comes from the preset,
``--config`` and the training flags, and is the same for every trial: one seed and one
validation split make the trials comparable.

Pruning: after every epoch a trial reports its validation accuracy; Optuna's median rule
stops a trial whose best accuracy so far is below the median of the finished trials at the
same epoch, once ``PRUNE_STARTUP_TRIALS`` trials have finished and ``prune_after`` epochs
are done. The last epoch is never pruned (the work is done by then). A pruned trial leaves
an unfinished run directory (config, history, best weights, resumable state; no
metrics.json) that ``fmnist train --resume`` can finish.

Storage: any SQLAlchemy URL. The default, ``sqlite:///study.db``, is a file in the current
directory; several machines can work on one study through a shared PostgreSQL or MySQL
database (``postgresql://user:password@host/db``, read with the psycopg 3 driver of the
``tune`` extra). Running the command again with the same storage and study name adds trials
to the study; the study remembers its fixed settings and refuses to mix in trials trained
differently.

Dead workers: every running trial records a heartbeat in the storage every ``heartbeat``
seconds (``--heartbeat``, default 60). A trial silent for three beats (its machine died or
was killed) is marked failed by the next worker to start a trial, and retried once with the
same parameters as a new trial (fmnist.storage). A trial stopped by Ctrl-C fails at once.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .config import TrainConfig
from .errors import StudyError, TrainingDiverged
from .models import MODELS
from .rundir import Run, atomic_write_json, writable_folder
from .storage import HEARTBEAT_SECONDS, open_storage
from .training import train

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial, Trial

DEFAULT_STORAGE = "sqlite:///study.db"
PRUNE_STARTUP_TRIALS = 2  # finished trials before the median rule may prune
# Settings that may differ between the machines working on one study.
MACHINE_FIELDS = ("device", "threads", "eval_batch_size")
SIGNATURE_ATTR = "fmnist_fixed"  # study user attribute: what every trial shares


def import_optuna() -> ModuleType:
    """Import Optuna, or explain how to install it."""
    try:
        import optuna
    except ImportError:
        raise StudyError(
            "fmnist tune needs Optuna, which is not installed. "
            "Install it with: pip install 'fmnist[tune]'"
        ) from None
    return optuna


# ---------------------------------------------------------------- search space


def _lr(trial: Trial, d: dict[str, Any]) -> float:
    low, high = (1e-2, 0.3) if d["optimizer"] == "sgd" else (3e-4, 1e-2)
    return trial.suggest_float("lr", low, high, log=True)


def _weight_decay(trial: Trial, d: dict[str, Any]) -> float:
    low, high = (1e-4, 0.1) if d["optimizer"] == "adamw" else (1e-6, 1e-3)
    return trial.suggest_float("weight_decay", low, high, log=True)


# Name -> sampler(trial, config values so far). Ordered: lr and weight_decay read the optimizer.
SPACE: dict[str, Callable[[Trial, dict[str, Any]], Any]] = {
    "optimizer": lambda t, d: t.suggest_categorical("optimizer", ["adam", "adamw", "sgd"]),
    "lr": _lr,
    "weight_decay": _weight_decay,
    "batch_size": lambda t, d: t.suggest_categorical("batch_size", [32, 64, 128, 256]),
    "label_smoothing": lambda t, d: t.suggest_float("label_smoothing", 0.0, 0.2),
    "flip": lambda t, d: t.suggest_categorical("flip", [0.0, 0.5]),
    "translate": lambda t, d: t.suggest_int("translate", 0, 3),
    "erase": lambda t, d: t.suggest_float("erase", 0.0, 0.5),
    "ema": lambda t, d: t.suggest_categorical("ema", [0.0, 0.99, 0.999]),
    "dropout": lambda t, d: t.suggest_float("dropout", 0.0, 0.5),
}
MODEL_ARGS = ("dropout",)  # names sampled into cfg.model_args rather than a config field


def takes(model: str, arg: str) -> bool:
    """True when the registry model ``model`` has a constructor argument ``arg``."""
    ctor = MODELS.get(model)
    return ctor is not None and arg in inspect.signature(ctor).parameters


def resolve_search(
    base: TrainConfig, search: Sequence[str] | None = None, fixed: Iterable[str] = ()
) -> list[str]:
    """The names to sample: ``search`` (default: the whole space) minus ``fixed`` ones."""
    fixed = set(fixed)
    usable = [n for n in SPACE if n not in MODEL_ARGS or takes(base.model, n)]
    if search is None:
        names = [n for n in usable if n not in fixed]
    else:
        unknown = [n for n in search if n not in SPACE]
        if unknown:
            raise StudyError(
                f"Unknown search names {unknown}; the search space has: {', '.join(SPACE)}."
            )
        unusable = [n for n in search if n not in usable]
        if unusable:
            raise StudyError(
                f"Model {base.model!r} has no {', '.join(unusable)} argument; "
                f"drop {', '.join(unusable)} from --search."
            )
        both = [n for n in search if n in fixed]
        if both:
            flags = ", ".join(f"--{n.replace('_', '-')}" for n in both)
            raise StudyError(
                f"{flags} fixes {', '.join(both)} for every trial, so it cannot also be "
                "searched; drop it from --search or drop the flag."
            )
        names = [n for n in SPACE if n in search]  # the space's order: optimizer first
    if not names:
        raise StudyError("Nothing left to search: every option is fixed. Give --search names.")
    return names


def suggest(trial: Trial, base: TrainConfig, names: Sequence[str]) -> TrainConfig:
    """Sample ``names`` for ``trial`` on top of ``base``; the rest stays as in ``base``."""
    d = dataclasses.asdict(base)
    for name in SPACE:
        if name not in names:
            continue
        value = SPACE[name](trial, d)
        if name in MODEL_ARGS:
            d["model_args"] = {**d["model_args"], name: value}
        else:
            d[name] = value
    return TrainConfig.from_dict(d)


# ---------------------------------------------------------------- the study


def default_study_name(cfg: TrainConfig) -> str:
    """The study name used when none is given: ``fmnist-<preset>``."""
    return f"fmnist-{cfg.preset}"


def default_out(study_name: str) -> Path:
    """Where a study's trial run directories go when ``--out`` is not given."""
    return Path("runs") / f"tune-{study_name}"


def open_study(
    storage: str = DEFAULT_STORAGE,
    study_name: str = "fmnist",
    prune_after: int = 1,
    heartbeat: int = HEARTBEAT_SECONDS,
) -> optuna.Study:
    """Create the study ``study_name`` in ``storage``, or load it if it exists."""
    optuna = import_optuna()
    rdb = open_storage(storage, heartbeat)
    return optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=prune_after
        ),
    )


def signature(base: TrainConfig, names: Sequence[str]) -> dict[str, Any]:
    """What every trial of a study shares: the searched names and the fixed settings."""
    fixed = {
        k: v
        for k, v in dataclasses.asdict(base).items()
        if k not in names and k not in MACHINE_FIELDS
    }
    # A JSON round trip, so that it compares equal to what the storage gives back.
    return json.loads(json.dumps({"search": sorted(names), "config": fixed}))


def check_study(study: optuna.Study, base: TrainConfig, names: Sequence[str]) -> None:
    """Record the study's fixed settings, or refuse settings that differ from the record."""
    mine = signature(base, names)
    theirs = study.user_attrs.get(SIGNATURE_ATTR)
    if theirs is None:
        study.set_user_attr(SIGNATURE_ATTR, mine)
        return
    if theirs == mine:
        return
    diffs = []
    if theirs.get("search") != mine["search"]:
        diffs.append(f"searched {theirs.get('search')} (study) vs {mine['search']} (now)")
    a, b = theirs.get("config", {}), mine["config"]
    for k in sorted(set(a) | set(b)):
        if a.get(k, "-") != b.get(k, "-"):
            diffs.append(f"{k} {a.get(k, '-')!r} (study) vs {b.get(k, '-')!r} (now)")
    raise StudyError(
        f"Study {study.study_name!r} was started with different settings: {'; '.join(diffs)}. "
        "Trials trained differently are not comparable: give the same preset and flags to "
        "add trials to it, or a new --study name (or --storage) for a new study."
    )


def check_out(study: optuna.Study, out: Path) -> None:
    """Refuse an ``out`` holding trial directories that are not trials of ``study``."""
    n = len(study.get_trials(deepcopy=False))
    numbers = sorted(int(p.name[6:]) for p in out.glob("trial-*") if p.name[6:].isdigit())
    stale = [k for k in numbers if k >= n]
    if stale:
        raise StudyError(
            f"{out / f'trial-{stale[0]}'} exists, but study {study.study_name!r} has only "
            f"{n} trial(s) (is it from an earlier study of the same name?). Give another "
            "--out, or move the old trial directories away."
        )


def tune(
    base: TrainConfig,
    n_trials: int,
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    out: str | os.PathLike | None = None,
    search: Sequence[str] | None = None,
    fixed: Iterable[str] = (),
    prune_after: int = 1,
    heartbeat: int = HEARTBEAT_SECONDS,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> optuna.Study:
    """Run ``n_trials`` more trials of a study over ``base`` and return the study."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise StudyError(
            "fmnist tune trains one process per trial and cannot run under torchrun; to use "
            "several machines, run `fmnist tune` on each against one shared --storage."
        )
    optuna = import_optuna()
    names = resolve_search(base, search, fixed)
    study_name = study_name or default_study_name(base)
    out = Path(out) if out else default_out(study_name)

    def objective(trial: Trial) -> float:
        cfg = suggest(trial, base, names)
        run_dir = out / f"trial-{trial.number}"
        if run_dir.exists() and any(run_dir.iterdir()):
            raise StudyError(
                f"{run_dir} already exists (from an earlier study of the same name?). Give "
                "another --out, or move the old trials away."
            )
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())  # which worker ran it
        trial.set_user_attr("config", dataclasses.asdict(cfg))

        def on_epoch(row: dict) -> None:
            epoch, acc = int(row["epoch"]), float(row["val_accuracy"])
            trial.report(acc, epoch)
            if epoch < cfg.epochs and trial.should_prune():
                trial.set_user_attr("pruned_after_epoch", epoch)
                raise optuna.TrialPruned(
                    f"validation accuracy {acc:.4f} after epoch {epoch} is below the median "
                    f"of the finished trials; its unfinished run is in {run_dir}"
                )

        try:
            train(cfg, out=run_dir, data_dir=data_dir, quiet=quiet, command=command,
                  on_epoch=on_epoch)  # fmt: skip
        except TrainingDiverged as e:  # a sampled recipe that diverges: pruned, not fatal
            trial.set_user_attr("diverged_in_epoch", e.epoch)
            raise optuna.TrialPruned(f"diverged in epoch {e.epoch} (loss {e.loss})") from None
        metrics = Run(run_dir).metrics()
        return float(metrics["best_val_accuracy"])

    writable_folder(out)  # before the study: a trial that fails on it stays in the study
    verbosity = optuna.logging.get_verbosity()
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(storage, study_name, prune_after, heartbeat)
        check_study(study, base, names)
        check_out(study, out)
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


# ---------------------------------------------------------------- results


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trials_table(study: optuna.Study) -> str:
    """One line per trial: number, state, best validation accuracy, epochs, parameters."""
    lines = [f"{'trial':>5s}  {'state':8s}  {'val_acc':>7s}  {'epochs':>6s}  params"]
    for t in study.get_trials(deepcopy=False):
        steps = t.intermediate_values
        if t.value is not None:
            acc = f"{t.value:.4f}"
        elif steps:  # pruned or unfinished: the best epoch so far
            acc = f"{max(steps.values()):.4f}"
        else:
            acc = "-"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        lines.append(f"{t.number:>5d}  {t.state.name:8s}  {acc:>7s}  {len(steps):>6d}  {params}")
    return "\n".join(lines)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The finished trial with the highest validation accuracy, or None if none finished."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def save_best(study: optuna.Study, path: str | os.PathLike) -> Path:
    """Write the best trial's full TrainConfig as JSON (for `fmnist train --config`)."""
    best = best_trial(study)
    if best is None:
        raise StudyError(f"Study {study.study_name!r} has no finished trial yet.")
    if "config" not in best.user_attrs:
        raise StudyError(
            f"Trial {best.number} of study {study.study_name!r} has no recorded config "
            "(it was not run by `fmnist tune`)."
        )
    cfg = TrainConfig.from_dict(best.user_attrs["config"])  # validates what is written
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dataclasses.asdict(cfg))
    return path
