"""tools/bundle.py's unsure rule: per-class floors from the validation answers, then fitted."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bundle.py"


@pytest.fixture(scope="module")
def bundle():
    spec = importlib.util.spec_from_file_location("bundle_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_hot_ish(cls: int, p: float) -> np.ndarray:
    out = np.full(10, (1 - p) / 9)
    out[cls] = p
    return out


def test_floors_are_per_class_quantiles_of_the_validation_answers(bundle):
    pred = np.array([1] * 100 + [2] * 100)
    conf = np.concatenate([np.linspace(0.95, 1.0, 100), np.linspace(0.4, 1.0, 100)])
    f = bundle.floors((pred, conf), 0.5)
    assert f[1] == pytest.approx(0.975) and f[2] == pytest.approx(0.7)
    assert f[0] == 0 and (bundle.floors((pred, conf), 0.0) == 0).all()  # no answers / q 0


def test_fit_raises_the_threshold_of_the_class_outsiders_land_in(bundle, capsys):
    """Shorts called Trouser at 0.8 go unsure once Trouser's floor is its validation 0.95."""
    photo = importlib.import_module("photosets").Photo  # on the path once bundle.py loads
    inside = [photo(Path(f"t{i}.jpg"), "t-shirt", frozenset({0})) for i in range(10)]
    outside = [photo(Path(f"s{i}.jpg"), "shorts", frozenset()) for i in range(10)]
    probs = [one_hot_ish(0, 0.7 if i < 8 else 0.6) for i in range(10)]  # under the 0.8
    probs += [one_hot_ish(1, 0.8)] * 10
    val = (np.array([0] * 50 + [1] * 50), np.r_[np.linspace(0.5, 1, 50), np.full(50, 0.96)])
    thresholds, rule = bundle.fit_rule(probs, inside + outside, val, coverage=0.7)
    assert rule["quantile"] > 0 and thresholds[1] >= 0.96 > 0.8
    r = bundle.scores_at(probs, inside + outside, thresholds)
    assert r["coverage"] >= 0.7 and r["outside_unsure"] == 1.0
    assert bundle.scores_at(probs, inside + outside, rule["threshold"])["outside_unsure"] == 0
    assert "quantile 0.00" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("figures", "chosen"),
    [
        # (answered accuracy, outside unsure) per quantile 0, 0.01, 0.02: the most accurate
        # of those marking 0.6 outside unsure, not the best sum (0.02's 1.7).
        ({0.0: (0.90, 0.3), 0.01: (0.85, 0.65), 0.02: (0.80, 0.9)}, 0.01),
        ({0.0: (0.90, 0.3), 0.01: (0.85, 0.45), 0.02: (0.80, 0.55)}, 0.02),  # none: best sum
        ({0.0: (0.90, 0.59), 0.01: (0.85, 0.6), 0.02: (0.80, 0.9)}, 0.01),  # 0.6 is enough
        ({0.0: (0.85, 0.6), 0.01: (0.85, 0.7), 0.02: (0.80, 0.9)}, 0.01),  # tie: more unsure
        ({0.0: (0.80, None), 0.01: (0.85, None)}, 0.01),  # no outsiders: the accuracy
    ],
)
def test_the_rule_keeps_the_outside_floor_then_the_most_accurate_answers(
    bundle, monkeypatch, figures: dict, chosen: float
) -> None:
    monkeypatch.setattr(bundle, "QUANTILES", tuple(figures))
    monkeypatch.setattr(bundle, "floors", lambda answers, q: np.full(10, 1 + q))  # q, readable

    def scores_at(probs: list, dev: list, t: np.ndarray) -> dict:
        accuracy, outside = figures[round(float(t[0]) - 1, 2)]
        return {"answered_accuracy": accuracy, "outside_unsure": outside, "coverage": 1.0}

    monkeypatch.setattr(bundle, "scores_at", scores_at)
    _, rule = bundle.fit_rule([], [], (np.zeros(0), np.zeros(0)), coverage=0.7)
    assert rule["quantile"] == chosen


def test_photo_offsets_undo_a_shift_within_their_bound(bundle):
    """Shoes the model calls Bag by a margin of 1: Sneaker's offset (and Bag's) fix them."""
    rng = np.random.default_rng(0)
    logp = rng.normal(-6, 0.3, (40, 10))
    logp[:20, 8], logp[:20, 7] = -0.5, -1.5  # 20 sneakers answered Bag
    logp[20:, 0] = -0.2  # 20 T-shirts answered right
    allowed = np.zeros((40, 10), bool)
    allowed[:20, 7], allowed[20:, 0] = True, True
    b = bundle.fit_offsets(logp, allowed)
    assert (logp + b).argmax(1).tolist() == [7] * 20 + [0] * 20
    assert b[7] - b[8] > 1 and np.abs(b).max() <= bundle.BOUND + 1e-9
    with pytest.raises(ValueError, match="at least one allowed class"):
        bundle.fit_offsets(logp, allowed & (np.arange(40) < 39)[:, None])
    p = np.exp(logp[0]) / np.exp(logp[0]).sum()
    out = bundle.shifted([p, p, None], np.array([True, False, True]), b)
    assert out[0].argmax() == 7 and out[0].sum() == pytest.approx(1)
    assert out[1] is p and out[2] is None  # unsegmented photos and no garment: untouched


def test_the_offsets_loss_has_the_right_gradient(bundle):
    from scipy.optimize import check_grad

    rng = np.random.default_rng(1)
    logp = np.log(rng.dirichlet(np.ones(10), 30))
    allowed = rng.random((30, 10)) < 0.2
    allowed[np.arange(30), rng.integers(0, 10, 30)] = True  # each photo: one or more classes
    loss = lambda b: bundle.offsets_loss(b, logp, allowed)[0]  # noqa: E731
    grad = lambda b: bundle.offsets_loss(b, logp, allowed)[1]  # noqa: E731
    for b in (np.zeros(10), rng.normal(0, 1, 10)):
        assert check_grad(loss, grad, b) < 1e-6
