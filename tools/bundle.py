"""Make a finished run one of the models that ship inside the package.

    python tools/bundle.py RUN_DIR --name default      # what `make bundled` runs
    python tools/bundle.py --name default --rescore    # re-measure it after a pipeline change

Writes ``src/fmnist/models_bundled/NAME/``: the weights and model.json (PyTorch), the
ONNX export (checked against PyTorch on the test set), and a model card. model.json gains
``min_confidence``, the unsure threshold of each class (:func:`fit_rule`: a common
threshold, the largest that still answers ``--coverage`` of the development photos'
in-class photos, raised for the classes the model is surest of on its validation split),
``photo_offsets``, one per class for the photos the pipeline segments (:func:`fit_offsets`,
fitted first), ``photo_shifts`` (true: fitted on answers averaged over one-pixel shifts,
as Classifier gives them), and ``bundle``: the command, commit and hardware that made the
model, what it scored on both photo sets and how the thresholds and offsets were fitted. The weights
never train on the photos; the thresholds and the offsets are fitted on the development
photos, whose figures are therefore also given out of fold.
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
from fmnist.predict import Classifier, class_thresholds, softmax
from fmnist.report.card import model_card
from fmnist.rundir import META, ONNX, WEIGHTS, Run, atomic_write_json, read_json
from fmnist.system import git_commit, hardware

THRESHOLDS = np.round(np.arange(0.30, 0.96, 0.01), 2)
# Per-class floors: this quantile of the top probability of the model's validation answers
# of each class. A class the model is nearly always sure of on the dataset (Trouser, Bag)
# then needs more than the common threshold on a photo: its low answers are the unsure ones.
QUANTILES = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05)
# Of the quantiles whose rule marks at least this share of the not-a-class photos (hats,
# skirts, shorts) unsure, the one whose answers are most often right is taken: a builder
# acts on the answers. The photo issue asks for 0.6. None reaching it: the best sum of both.
OUTSIDE_UNSURE = 0.6
# Photo offsets: each class's lies within +-BOUND (log-probability units; two classes then
# differ by at most 2 * BOUND), so that a class the development photos never show (Bag) is
# held back, not ruled out. Bounds of 2, 3 and 10 scored alike out of fold (README: "Photo
# offsets"): the smallest is kept.
BOUND = 2.0
# Bundling one model rewrites its folder, which says nothing about the code that scores or
# bundles the next: the commit stamps do not count changes there.
BUNDLED = "src/fmnist/models_bundled"


def photo_probabilities(clf: Classifier, photos: list) -> tuple[list, np.ndarray]:
    """Per photo its probabilities (None where no garment was found) and whether it was
    segmented (N,) bool."""
    pred, outcomes = clf.predict_each([p.path for p in photos])
    out, segmented = [], np.zeros(len(photos), bool)
    for i, o in enumerate(outcomes):
        if isinstance(o, ImageError) and o.code != "no_garment":
            raise o
        out.append(None if isinstance(o, ImageError) else pred.probabilities[o])
        segmented[i] = not isinstance(o, ImageError) and bool(pred.photo[o])
    return out, segmented


def offsets_loss(b: np.ndarray, logp: np.ndarray, allowed: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean -log probability of an allowed class once ``b`` (C,) is added to ``logp``
    (N, C), and its gradient (C,)."""
    from scipy.special import log_softmax, logsumexp

    z = log_softmax(logp + b, axis=1)
    za = np.where(allowed, z, -np.inf)
    right = logsumexp(za, axis=1, keepdims=True)  # log P(an allowed class) (N, 1)
    return -float(right.mean()), (np.exp(z) - np.exp(za - right)).mean(0)


def fit_offsets(logp: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per class (C,), the offsets within +-BOUND to the log-probabilities ``logp`` (N, C)
    that make the photos' right answers (``allowed`` (N, C) bool) most likely: the mean
    -log of the probability of an allowed class, minimised by L-BFGS-B."""
    from scipy.optimize import minimize

    if not allowed.any(1).all():
        raise ValueError("every photo needs at least one allowed class to fit offsets on")
    c = logp.shape[1]
    fit = minimize(
        offsets_loss,
        np.zeros(c),
        args=(logp, allowed),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-BOUND, BOUND)] * c,
    )
    return fit.x


def shifted(probs: list, segmented: np.ndarray, offsets: np.ndarray) -> list:
    """The probabilities with ``offsets`` added to the log-probabilities of segmented photos."""
    out = []
    for p, seg in zip(probs, segmented, strict=True):
        if p is not None and seg:  # as Classifier.predict_inputs: softmax(logits + offsets)
            p = softmax((np.log(np.maximum(p, 1e-300)) + offsets)[None])[0]
        out.append(p)
    return out


def photo_offsets(probs: list, segmented: np.ndarray, dev: list) -> tuple[np.ndarray, dict]:
    """The offsets fitted on the segmented in-class development photos, and how they score:
    in-class right answers before, after (in-sample) and out of fold (5 folds per kind, three
    shuffles: fitted on four fifths, counted on the fifth)."""
    allowed = np.array([[c in p.allowed for c in range(len(CLASSES))] for p in dev])
    use = np.array([p is not None and a.any() for p, a in zip(probs, allowed, strict=True)])
    logp = np.log(np.maximum(np.stack([np.full(len(CLASSES), 0.1) if p is None else p
                                       for p in probs]), 1e-300))  # fmt: skip

    def right(b: np.ndarray, rows: np.ndarray) -> int:
        z = logp[rows] + b * segmented[rows, None]
        return int(allowed[rows][np.arange(rows.sum()), z.argmax(1)].sum())

    offsets = fit_offsets(logp[use & segmented], allowed[use & segmented]).round(3)
    folders = np.array([p.folder for p in dev])
    oof = []
    for seed in range(3):
        fold, rng = np.full(len(dev), -1), np.random.default_rng(seed)
        for f in sorted(set(folders)):
            idx = rng.permutation(np.flatnonzero(use & (folders == f)))
            fold[idx] = np.arange(len(idx)) % 5
        fits = [fit_offsets(logp[(fold != k) & use & segmented],
                            allowed[(fold != k) & use & segmented]) for k in range(5)]  # fmt: skip
        oof.append(sum(right(fits[k], fold == k) for k in range(5)))
    n = int(use.sum())
    rule = {"fit": "maximum likelihood of the allowed classes", "bound": BOUND,
            "in_class_right": {"none": f"{right(np.zeros(len(CLASSES)), use)}/{n}",
                               "fitted_in_sample": f"{right(offsets, use)}/{n}",
                               "out_of_fold": [f"{r}/{n}" for r in oof]}}  # fmt: skip
    print(f"photo offsets {offsets.tolist()} ({rule})")
    return offsets, rule


def scores_at(probs: list, photos: list, thresholds: np.ndarray | float) -> dict:
    """The photo-set scores when answers below their class's threshold are unsure."""
    t = class_thresholds(thresholds, CLASSES)
    predicted = [None if p is None else int(p.argmax()) for p in probs]
    unsure = [p is None or float(p.max()) < t[int(p.argmax())] for p in probs]
    return score(predicted, unsure, photos)


def validation_answers(clf: Classifier, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """The class answered and its probability for each image of the model's validation split,
    averaged over one-pixel shifts as the photos' answers are when the classifier shifts
    (the floors then compare like with like: the average is less sure than one pass)."""
    (x, _), _ = load_data()
    x = x[: config.get("limit_train") or len(x)]  # the split training made (training.setup)
    _, val = split_indices(len(x), config["val_split"], config["seed"])
    p = clf.predict_inputs(x[val], None, np.full(len(val), clf.photo_shifts)).probabilities
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
    in-class development photos, q the one with the most accurate answers among those that
    mark OUTSIDE_UNSURE of the not-a-class photos unsure (none: the best sum of the two)."""
    best: tuple | None = None
    for q in QUANTILES:
        floor = floors(answers, q)
        # Coverage only falls as t rises: the first t from the top that keeps it is the one.
        tried = ((float(t), scores_at(probs, dev, np.maximum(floor, t))) for t in THRESHOLDS[::-1])
        t, r = next(((t, r) for t, r in tried if r["coverage"] >= coverage), (None, None))
        if r is None:
            continue
        outside = r["outside_unsure"] or 0.0
        enough = outside >= OUTSIDE_UNSURE
        # Rounded so that float noise never decides; equal accuracy: more unsure outside.
        gain = (enough, round(r["answered_accuracy"] + (0 if enough else outside), 9), outside)
        print(
            f"  quantile {q:.2f}: threshold {t:.2f}, answered accuracy "
            f"{r['answered_accuracy']:.3f}, outside unsure {r['outside_unsure']}"
        )
        if best is None or gain > best[0]:
            best = (gain, q, t, floor)
    if best is None:
        raise SystemExit(f"no threshold answers {coverage} of the development photos")
    _, q, t, floor = best
    rule = {"quantile": q, "threshold": t, "coverage": coverage}
    return np.round(np.maximum(floor, t), 3), rule


def measure(clf: Classifier, config: dict, coverage: float) -> tuple[dict, dict]:
    """The photo offsets and unsure thresholds fitted on the validation split and the
    development photos (model.json keys), how they were fitted, and both photo sets' scores
    with them."""
    sets = {name: load_set(r) for name, r in SETS.items()}
    raw = {name: photo_probabilities(clf, photos) for name, photos in sets.items()}
    offsets, offset_rule = photo_offsets(*raw["photos-dev"], sets["photos-dev"])
    probs = {name: shifted(p, seg, offsets) for name, (p, seg) in raw.items()}
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
    fitted = {"min_confidence": thresholds.tolist(), "photo_offsets": offsets.tolist(),
              "photo_shifts": clf.photo_shifts}  # fmt: skip
    record = photo_record(results, offset_rule)
    return fitted, {"unsure_rule": rule, "photo_offsets_rule": offset_rule, **record}


def photo_record(results: dict, offset_rule: dict) -> dict:
    """What model.json's ``bundle`` keeps of the photo scores: the development photos' right
    answers are in-sample (the offsets were fitted on them), so their out-of-fold range too."""
    oof = sorted(int(r.split("/")[0]) for r in offset_rule["in_class_right"]["out_of_fold"])
    accuracy = {n: f"{r['in_class_right']}/{r['in_class']}" for n, r in results.items()}
    span = f"{oof[0]}" if oof[0] == oof[-1] else f"{oof[0]}-{oof[-1]}"
    accuracy["photos-dev"] += f" ({span} out of fold)"
    return {
        "photo_accuracy": accuracy,
        "unsure": {
            n: {k: r[k] for k in ("coverage", "answered_accuracy", "outside_unsure")}
            for n, r in results.items()
        },
        "photos_scored_at_commit": git_commit(exclude=BUNDLED),
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
        help="re-measure bundled NAME on the photos, refit its offsets and thresholds",
    )
    args = ap.parse_args()
    if args.rescore == (args.run_dir is not None):
        ap.error("give RUN_DIR to bundle a run, or --rescore to re-measure a bundled model")

    dest = root() / args.name
    if args.rescore:
        meta = read_json(dest / META)
        clf = Classifier.load(dest, min_confidence=0.0, photo_offsets=0, photo_shifts=True)
        fitted, record = measure(clf, meta["config"], args.coverage)
        meta.update(fitted)
        meta["bundle"].update(record)
        finish(dest, args.name, meta, meta["metrics"])
        return
    run = Run(args.run_dir).require_finished()
    meta = read_json(run / META)
    clf = Classifier.load(run.path, min_confidence=0.0, photo_offsets=0, photo_shifts=True)
    fitted, record = measure(clf, meta["config"], args.coverage)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / WEIGHTS, dest / WEIGHTS)
    meta.update(fitted)
    metrics = run.metrics()
    meta["bundle"] = {
        "run": run.path.name,
        **record,
        "provenance": {
            "command": metrics.get("command"),
            "commit": metrics.get("commit"),
            "hardware": metrics.get("hardware"),
            "bundled_at_commit": record["photos_scored_at_commit"],
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
                      min_confidence=meta["min_confidence"],
                      photo_offsets=meta["photo_offsets"])  # fmt: skip


if __name__ == "__main__":
    main()
