"""Make a finished run one of the models that ship inside the package.

    python tools/bundle.py RUN_DIR --name default      # what `make bundled` runs
    python tools/bundle.py --name default --rescore    # re-measure it after a pipeline change

Writes ``src/fmnist/models_bundled/NAME/``: the weights and model.json (PyTorch), the
ONNX export (checked against PyTorch on the test set), and a model card. model.json gains
``min_confidence``, the unsure threshold of each class (:func:`fit_rule`: a common
threshold, the largest that still answers ``--coverage`` of the development photos'
in-class photos, raised for the classes the model is surest of on its validation split),
and ``bundle``: the command, commit and hardware that made the model, what it scored on
both photo sets and how the thresholds were fitted. The photos are only measured, never
trained on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from photosets import SETS, load_set, score

from fmnist.bundled import root
from fmnist.data import CLASSES, load_data, split_indices
from fmnist.errors import ImageError
from fmnist.export import export
from fmnist.predict import Classifier, class_thresholds
from fmnist.report.card import model_card
from fmnist.rundir import META, ONNX, WEIGHTS, Run, atomic_write_json, read_json
from fmnist.system import git_commit, hardware

THRESHOLDS = np.round(np.arange(0.30, 0.96, 0.01), 2)
# Per-class floors: this quantile of the top probability of the model's validation answers
# of each class. A class the model is nearly always sure of on the dataset (Trouser, Bag)
# then needs more than the common threshold on a photo: its low answers are the unsure ones.
QUANTILES = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05)


def photo_probabilities(clf: Classifier, photos: list) -> list[np.ndarray | None]:
    """Per photo its probabilities, or None where no garment was found."""
    pred, outcomes = clf.predict_each([p.path for p in photos])
    out = []
    for o in outcomes:
        if isinstance(o, ImageError) and o.code != "no_garment":
            raise o
        out.append(None if isinstance(o, ImageError) else pred.probabilities[o])
    return out


def scores_at(probs: list, photos: list, thresholds: np.ndarray | float) -> dict:
    """The photo-set scores when answers below their class's threshold are unsure."""
    t = class_thresholds(thresholds, CLASSES)
    predicted = [None if p is None else int(p.argmax()) for p in probs]
    unsure = [p is None or float(p.max()) < t[int(p.argmax())] for p in probs]
    return score(predicted, unsure, photos)


def validation_answers(clf: Classifier, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """The class answered and its probability for each image of the model's validation split."""
    (x, _), _ = load_data()
    x = x[: config.get("limit_train") or len(x)]  # the split training made (training.setup)
    _, val = split_indices(len(x), config["val_split"], config["seed"])
    p = clf.predict(x[val]).probabilities
    return p.argmax(1), p.max(1)


def floors(answers: tuple[np.ndarray, np.ndarray], q: float) -> np.ndarray:
    """Per class, the ``q`` quantile of the top probability of its validation answers."""
    pred, conf = answers
    return np.array(
        [
            np.quantile(conf[pred == c], q) if q > 0 and (pred == c).any() else 0.0
            for c in range(len(CLASSES))
        ]
    )


def fit_rule(
    probs: list, dev: list, answers: tuple[np.ndarray, np.ndarray], coverage: float
) -> tuple[np.ndarray, dict]:
    """Per-class thresholds: max(floor at q, t), t the largest answering ``coverage`` of the
    in-class development photos, q the one that maximises answered accuracy + unsure outside."""
    best: tuple | None = None
    for q in QUANTILES:
        floor = floors(answers, q)
        # Coverage only falls as t rises: the first t from the top that keeps it is the one.
        tried = ((float(t), scores_at(probs, dev, np.maximum(floor, t))) for t in THRESHOLDS[::-1])
        t, r = next(((t, r) for t, r in tried if r["coverage"] >= coverage), (None, None))
        if r is None:
            continue
        gain = r["answered_accuracy"] + (r["outside_unsure"] or 0.0)
        print(
            f"  quantile {q:.2f}: threshold {t:.2f}, answered accuracy "
            f"{r['answered_accuracy']:.3f}, outside unsure {r['outside_unsure']}"
        )
        if best is None or gain > best[0] + 1e-9:
            best = (gain, q, t, floor)
    if best is None:
        raise SystemExit(f"no threshold answers {coverage} of the development photos")
    _, q, t, floor = best
    rule = {"quantile": q, "threshold": t, "coverage": coverage}
    return np.round(np.maximum(floor, t), 3), rule


def measure(clf: Classifier, config: dict, coverage: float) -> tuple[list[float], dict, dict]:
    """The unsure thresholds fitted on the validation split and the development photos, how
    they were fitted, and both photo sets' scores with them."""
    sets = {name: load_set(r) for name, r in SETS.items()}
    probs = {name: photo_probabilities(clf, photos) for name, photos in sets.items()}
    thresholds, rule = fit_rule(
        probs["photos-dev"], sets["photos-dev"], validation_answers(clf, config), coverage
    )
    results = {n: scores_at(p, sets[n], thresholds) for n, p in probs.items()}
    print(f"unsure thresholds per class {thresholds.tolist()} ({rule})")
    for n, r in results.items():
        print(
            f"{n}: {r['in_class_right']}/{r['in_class']} in-class right; coverage "
            f"{r['coverage']:.2f}, answered accuracy {r['answered_accuracy']:.3f}, "
            f"not-a-class photos unsure {r['outside_unsure']}"
        )
        print("  " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in r["folders"].items()))
    return thresholds.tolist(), rule, results


def photo_record(results: dict) -> dict:
    """What model.json's ``bundle`` keeps of the photo scores."""
    return {
        "photo_accuracy": {n: f"{r['in_class_right']}/{r['in_class']}" for n, r in results.items()},
        "unsure": {
            n: {k: r[k] for k in ("coverage", "answered_accuracy", "outside_unsure")}
            for n, r in results.items()
        },
        "photos_scored_at_commit": git_commit(),
    }


def finish(dest: Path, name: str, meta: dict, metrics: dict) -> None:
    """Write model.json, the checked ONNX export and the model card of bundled ``name``."""
    atomic_write_json(dest / META, meta)
    report = export(dest, dest / ONNX)
    print(f"ONNX parity: {report.max_prob_diff:.1e}, {report.label_mismatches} labels differ")
    (dest / "README.md").write_text(bundled_card(name, meta, metrics))
    size = sum(f.stat().st_size for f in dest.iterdir()) / 1e6
    print(f"bundled {name}: {dest} ({size:.2f} MB)")
    print(json.dumps(meta["bundle"], indent=1))


def main() -> None:
    """Bundle RUN_DIR as NAME (or re-measure bundled NAME) and print what it scores."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", help="a finished run (not with --rescore)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--coverage", type=float, default=0.7, help="in-class photos answered")
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="re-measure bundled NAME on the photos and refit its threshold; weights kept",
    )
    args = ap.parse_args()
    if args.rescore == (args.run_dir is not None):
        ap.error("give RUN_DIR to bundle a run, or --rescore to re-measure a bundled model")

    dest = root() / args.name
    if args.rescore:
        meta = read_json(dest / META)
        clf = Classifier.load(dest, min_confidence=0.0)
        meta["min_confidence"], rule, results = measure(clf, meta["config"], args.coverage)
        meta["bundle"].update(photo_record(results), unsure_rule=rule)
        finish(dest, args.name, meta, meta["metrics"])
        return
    run = Run(args.run_dir).require_finished()
    meta = read_json(run / META)
    clf = Classifier.load(run.path, min_confidence=0.0)
    thresholds, rule, results = measure(clf, meta["config"], args.coverage)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / WEIGHTS, dest / WEIGHTS)
    meta["min_confidence"] = thresholds
    metrics = run.metrics()
    meta["bundle"] = {
        "run": run.path.name,
        **photo_record(results),
        "unsure_rule": rule,
        "provenance": {
            "command": metrics.get("command"),
            "commit": metrics.get("commit"),
            "hardware": metrics.get("hardware"),
            "bundled_at_commit": git_commit(),
            "bundled_on": hardware(),
        },
    }
    finish(dest, args.name, meta, metrics)


def bundled_card(name: str, meta: dict, metrics: dict) -> str:
    """The bundled model's card: fmnist's model card, with how the model was made."""
    b = meta["bundle"]
    made = (
        f"## How it was made\n\n`{b['provenance']['command']}` at commit "
        f"{b['provenance']['commit']} on {b['provenance']['hardware']}; `make bundled` "
        "remakes it from scratch.\n"
    )
    return model_card(name, meta, metrics, made, photo_accuracy=b["photo_accuracy"],
                      min_confidence=meta["min_confidence"])  # fmt: skip


if __name__ == "__main__":
    main()
