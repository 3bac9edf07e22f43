"""Ensembles: several finished runs averaged into one model, scored and reported like a run.

``ensemble(run_dirs)`` loads each run's model (safetensors + JSON, never unpickled), checks
that they agree on the classes, scores every member and the ensemble on the test set, and
writes a directory that the other commands take like a run directory:

    model.safetensors, model.json   every member's weights, model "ensemble" (see
                                    Ensemble below): predict, serve, evaluate, export and
                                    report need only the path
    config.json                     the member runs
    metrics.json                    the ensemble's test scores and each member's
    history.csv                     empty: nothing was trained, so the report has no curves
    report.md, report.html, ...     the report every run gets

The ensemble predicts the mean of its members' softmax probabilities. Flip test-time
augmentation averages its output over the image and its mirror image, as for any model
with ``tta``; by default it is on when every member's run uses it (the default and best
presets). A member trained without flips is hurt by it: a 2-epoch seed run scores 88.4 %
plain and 76.2 % with flip-TTA (shoes face one way in Fashion-MNIST).
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_model, resolve
from .errors import ConfigError, EnsembleError
from .models import ENSEMBLE, Normalized, count_params, create_model
from .rundir import META, WEIGHTS, Run, held_files, output_dir, provenance, writable_folder

MIN_MEMBERS = 2
INPUT = "float32 pixels in [0, 1], shape (N, 1, 28, 28), garment light on black"


class Ensemble(nn.Module):
    """Several trained models as one: the log of their mean softmax probabilities.

    Input: float32 pixels in [0, 1] shaped (B, 1, 28, 28); each member is a
    :class:`Normalized` model with its own normalisation. Output (B, 10): log-probabilities,
    which are valid logits: softmax(output) is the mean of the members' probabilities, so
    evaluate, predict, export and flip-TTA treat an ensemble like any other model.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"An ensemble needs at least 2 members, got {len(members)}.")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        """Return log of the members' mean probabilities."""
        logp = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])  # (K, B, 10)
        # log(mean_k p_k) without underflow: a member's p may be 0 in float32, its log-p is not.
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))

    @classmethod
    def from_specs(cls, members: Sequence[dict[str, Any]]) -> Ensemble:
        """Build untrained members from model.json-like specs {model, model_args, normalization}."""
        try:
            return cls(
                [
                    Normalized.from_meta(
                        create_model(m["model"], **m.get("model_args", {})), m["normalization"]
                    )
                    for m in members
                ]
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                "ensemble members must be specs like {'model': 'seed', 'model_args': {}, "
                "'normalization': {'mean': 0.0, 'std': 1.0}}, as `fmnist ensemble` writes "
                f"them ({type(e).__name__}: {e})."
            ) from None


@dataclass
class EnsembleResult:
    """What `ensemble` wrote and how the members and the ensemble scored on the test set."""

    run_dir: Path  # the ensemble's directory
    members: list[dict[str, Any]]  # per member: run, model, params, test_accuracy, ...
    metrics: dict[str, Any]  # the ensemble's evaluate.compute_metrics() on the test set
    tta: bool  # whether the ensemble and its members were scored with flip-TTA
    report: Path  # report.html
    export: Any = None  # export.ExportReport when an ONNX file was asked for


def _has_model(run_dir: Path) -> None:
    """Refuse a directory without model files, naming what it holds instead."""
    missing = [name for name in (WEIGHTS, META) if not (run_dir / name).is_file()]
    if not missing:
        return
    found = sorted(p.name for p in run_dir.iterdir())
    what = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "nothing"
    raise EnsembleError(
        f"{run_dir} has no model: expected {WEIGHTS} and {META} (written by `fmnist train` "
        f"after its first epoch), found {what}. Train it with `fmnist train --out {run_dir}`, "
        "or leave it out of the ensemble."
    )


def load_members(
    run_dirs: Sequence[str | os.PathLike],
) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """Load the members' models and metadata, refusing runs that cannot form an ensemble.

    Refused: fewer than two runs, a run given twice, a run without a model, an ensemble, and
    members that disagree on the class names.
    """
    if len(run_dirs) < MIN_MEMBERS:
        given = f": {', '.join(map(str, run_dirs))}" if run_dirs else ""
        raise EnsembleError(
            f"An ensemble needs at least {MIN_MEMBERS} runs, got {len(run_dirs)}{given}. "
            "Pass two or more run directories, e.g. `fmnist ensemble runs/a runs/b`."
        )
    seen: dict[Path, str] = {}
    for d in run_dirs:
        if Path(d).is_dir():
            _has_model(Path(d))
        weights, meta = resolve(d)
        if _model_name(meta) == ENSEMBLE:  # a directory or its model file alike
            raise EnsembleError(
                f"{d} is an ensemble itself: its members would weigh in once through it and "
                "again where given. Give member runs only (an ensemble's are listed in its "
                "config.json)."
            )
        weights = weights.resolve()  # one model, however it is named
        if weights in seen:
            raise EnsembleError(
                f"The model {weights} is given twice ({seen[weights]} and {d}); averaging a "
                "model with itself only weights it double. Give each run once."
            )
        seen[weights] = str(d)
    models, metas = zip(*(load_model(d) for d in run_dirs), strict=True)
    classes = metas[0]["classes"]
    for d, meta in zip(run_dirs, metas, strict=True):
        if meta["classes"] != classes:
            raise EnsembleError(
                f"The members disagree on the classes: {run_dirs[0]} has {classes} but {d} "
                f"has {meta['classes']}. An ensemble averages probabilities class by class, "
                f"so every member must predict the same classes in the same order; leave {d} "
                "out."
            )
    return list(models), list(metas)


def build_ensemble(
    models: Sequence[nn.Module], metas: Sequence[dict[str, Any]], tta: bool | None = None
) -> tuple[Normalized, dict[str, Any]]:
    """The ensemble as `checkpoint.load_model` rebuilds it, and its model.json metadata.

    ``tta``: flip test-time augmentation; None means on if every member's run uses it.
    The outer Normalized is the identity (mean 0, std 1): each member normalises its own
    input, and every loaded model being a Normalized keeps the other code paths the same.
    """
    if tta is None:
        tta = all(bool(m.get("tta")) for m in metas)
    model = Normalized(Ensemble(models), 0.0, 1.0).eval()
    specs = [
        {
            "model": m["model"],
            "model_args": m["model_args"],
            "normalization": {
                "mean": m["normalization"]["mean"],
                "std": m["normalization"]["std"],
                "temperature": m["normalization"].get("temperature", 1.0),
            },
        }
        for m in metas
    ]
    meta = {
        "model": ENSEMBLE,
        "model_args": {"members": specs},
        "classes": list(metas[0]["classes"]),
        "normalization": {"mean": 0.0, "std": 1.0, "input": INPUT},
        "tta": tta,  # flip-TTA of the whole ensemble: every member sees both images
    }
    return model, meta


def _check_out(out: Path, run_dirs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output directory that is a member or holds a trained run's model."""
    members = {resolve(d)[0].parent.resolve() for d in run_dirs}
    if out.resolve() in members:
        raise EnsembleError(
            f"--out {out} is one of the members; writing there would replace its model. "
            "Give a new directory, e.g. runs/ensemble."
        )
    if not (out / META).is_file():
        held = held_files(out)  # a .lock too: the folder of a run being trained
        if held:  # a folder of the user's: README.md and report.html would replace theirs
            raise EnsembleError(
                f"--out {out} already holds files ({held}) that the ensemble's could replace. "
                "Give a new or empty folder, e.g. runs/ensemble."
            )
        return
    model_name = _model_name(out / META)
    if model_name != ENSEMBLE:
        raise EnsembleError(
            f"--out {out} already holds a model that is not an ensemble ({out / META}: "
            f"{model_name!r}); writing there would replace it. Give a new directory, e.g. "
            "runs/ensemble."
        )


def _model_name(meta: Path) -> str | None:
    """The model name in a model.json, or None when it is damaged."""
    try:
        return json.loads(meta.read_text()).get("model")
    except (ValueError, AttributeError, OSError):
        return None


def _score_members(
    run_dirs: Sequence[str | os.PathLike],
    models: Sequence[nn.Module],
    metas: Sequence[dict[str, Any]],
    test: tuple[Any, Any],
    tta: bool,
) -> list[dict[str, Any]]:
    """Each member's test scores with the ensemble's TTA setting, beside its training's."""
    from .evaluation import score_test

    members = []
    for d, m, m_meta in zip(run_dirs, models, metas, strict=True):
        scores = score_test(m, tta=tta, classes=m_meta["classes"], test=test).metrics
        trained = m_meta.get("metrics", {})
        members.append(
            {
                "run": str(d),
                "model": m_meta["model"],
                "params": count_params(m),
                "epochs": trained.get("epochs"),
                "train_seconds": trained.get("train_seconds"),
                "test_accuracy": scores["accuracy"],  # with the ensemble's TTA setting
                "test_loss": scores["loss"],
                "ece": scores["ece"],
                "trained_test_accuracy": trained.get("test_accuracy"),  # as training scored it
            }
        )
    return members


def _metrics(
    scores: dict[str, Any], members: list[dict[str, Any]], model: nn.Module, tta: bool
) -> dict[str, Any]:
    """metrics.json of the ensemble, without its provenance."""
    return {
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        "ece": scores["ece"],
        "members": members,
        "model": ENSEMBLE,
        "preset": ENSEMBLE,
        "params": count_params(model),
        # The cost of the ensemble: all its members' training together.
        "epochs": sum(r["epochs"] or 0 for r in members),
        "train_seconds": sum(r["train_seconds"] or 0.0 for r in members),
        "tta": tta,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def ensemble(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    onnx: str | os.PathLike | None = None,
    tta: bool | None = None,
    data_dir: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = "runs",
) -> EnsembleResult:
    """Average the models of ``run_dirs`` into one, score and report it, and say how.

    Writes the ensemble's directory (default ``runs/<time>-ensemble``) after scoring the
    ensemble and each member on the test set. ``tta``: flip test-time augmentation for the
    ensemble and, for a fair comparison, its members; None means on if every member's run
    uses it. With ``onnx``, also export the ensemble there as one ONNX model after the
    same parity check as `fmnist export`. Every check runs before anything is written.
    """
    from .checkpoint import save_model
    from .data import load_data
    from .evaluation import score_test
    from .export import check_output, export
    from .report import write_report

    onnx_path = check_output(onnx, "--onnx") if onnx is not None else None
    models, metas = load_members(run_dirs)
    writable_folder(Path(runs_root if out is None else out))  # before the scoring, not after
    if out is not None:
        _check_out(Path(out), run_dirs)
    model, meta = build_ensemble(models, metas, tta)
    classes, use_tta = meta["classes"], meta["tta"]
    _, test = load_data(data_dir)  # loaded once for every member and the ensemble
    members = _score_members(run_dirs, models, metas, test, use_tta)
    ev = score_test(model, tta=use_tta, classes=classes, test=test)

    run = Run.create(ENSEMBLE, runs_root) if out is None else Run(output_dir(out))
    command = shlex.join(
        ["fmnist", "ensemble", *map(str, run_dirs), "--out", str(run.path)]
        + (["--tta" if tta else "--no-tta"] if tta is not None else [])
        + (["--onnx", str(onnx_path)] if onnx_path else [])
    )
    config = {
        "preset": ENSEMBLE,
        "model": ENSEMBLE,
        "members": [str(d) for d in run_dirs],
        "combine": "mean of the members' softmax probabilities",
        "tta": use_tta,
    }
    metrics = _metrics(ev.metrics, members, model, use_tta) | provenance("cpu", command)
    meta |= {"config": config, "versions": metrics["versions"]}
    save_model(run.path, model, {**meta, "metrics": metrics})
    run.write_config(config)
    run.write_history([])
    run.write_metrics(metrics)
    report = write_report(run.path, data_dir, evaluated=(ev, model, meta, ev.images))
    exported = export(run.path, onnx_path, data_dir=data_dir) if onnx_path else None
    return EnsembleResult(run.path, members, ev.metrics, use_tta, report, exported)


def summary_table(result: EnsembleResult) -> str:
    """The members' and the ensemble's test scores as an aligned text table."""
    width = max(len("ensemble"), *(len(r["run"]) for r in result.members))
    lines = [f"{'member':{width}s} {'model':8s} {'test acc':>8s} {'loss':>7s} {'ECE':>7s}"]
    for r in result.members:
        lines.append(
            f"{r['run']:{width}s} {r['model']:8s} {r['test_accuracy']:>8.4f} "
            f"{r['test_loss']:>7.4f} {r['ece']:>7.4f}"
        )
    m = result.metrics
    lines.append(
        f"{'ensemble':{width}s} {ENSEMBLE:8s} {m['accuracy']:>8.4f} {m['loss']:>7.4f} "
        f"{m['ece']:>7.4f}"
    )
    return "\n".join(lines)
