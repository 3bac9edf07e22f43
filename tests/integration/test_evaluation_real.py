"""Scoring real models on the real test set: agreement with training, TTA, features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmnist import system
from fmnist.ensemble import Ensemble
from fmnist.evaluation import (
    evaluate,
    loss_accuracy,
    predict_logits,
    probabilities,
)
from fmnist.features import penultimate_features
from fmnist.models import (
    MODELS,
    Normalized,
    create_model,
)

CLASSES3 = ("a", "b", "c")


def test_evaluate_agrees_with_training_and_applies_tta(fashion):
    _, (x_test, y_test) = fashion
    torch.manual_seed(0)
    model = Normalized(create_model("seed")).eval()
    x, y = x_test[:300], y_test[:300]
    logits = predict_logits(model, torch.from_numpy(x))
    ev = evaluate(model, x, y)
    loss, acc = loss_accuracy(logits, torch.from_numpy(y))
    assert ev.metrics["accuracy"] == pytest.approx(acc)
    assert ev.metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert (ev.predictions == logits.argmax(1).numpy()).all()
    flipped = predict_logits(model, torch.from_numpy(x).flip(-1))
    tta = evaluate(model, x, y, tta=True)
    assert np.allclose(tta.probabilities, probabilities((logits + flipped) / 2), atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        evaluate(model, x.astype(np.float32), y)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_penultimate_features_feed_the_last_linear(name, fashion, monkeypatch):
    monkeypatch.setattr(system, "cpu_flags", frozenset)  # no bf16 units: auto is fp32, exact
    _, (x_test, _) = fashion
    torch.manual_seed(0)
    model = Normalized(create_model(name)).eval()
    features = penultimate_features(model, x_test[:16], batch_size=7)  # uneven batches
    last = model.net.classifier[-1]
    assert isinstance(last, torch.nn.Linear) and features.shape == (16, last.in_features)
    logits = predict_logits(model, torch.from_numpy(x_test[:16]))
    rebuilt = torch.from_numpy(features) @ last.weight.T + last.bias
    assert torch.allclose(rebuilt, logits, atol=1e-4)


def test_ensemble_features_are_every_members_side_by_side(fashion):
    x = fashion[1][0][:16]
    torch.manual_seed(0)
    members = [Normalized(create_model(name)).eval() for name in ("seed", "fast")]
    features = penultimate_features(Normalized(Ensemble(members)), x, batch_size=7)
    each = [penultimate_features(m, x) for m in members]
    assert features.shape == (16, sum(f.shape[1] for f in each))
    np.testing.assert_allclose(features, np.concatenate(each, axis=1), atol=1e-5)
