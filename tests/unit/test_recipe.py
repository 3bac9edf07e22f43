"""The weight average's warm-up: recent weights early, the configured decay later."""

from __future__ import annotations

import pytest
import torch

from fmnist.config import get_preset
from fmnist.recipe import make_ema


def test_the_average_follows_the_weights_early_and_decays_at_cfg_ema_later() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    cfg = get_preset("best")  # ema 0.999
    with torch.no_grad():
        model.weight.fill_(0.0)  # the random initial weights
        ema = make_ema(cfg, model)
        model.weight.fill_(1.0)
        ema.update_parameters(model)  # the first update copies
        model.weight.fill_(3.0)
        ema.update_parameters(model)  # decay min(0.999, 2 / 11): mostly the new weights
    assert ema.module.weight.item() == pytest.approx(2 / 11 * 1 + 9 / 11 * 3)  # not 1.002
    ema.n_averaged.fill_(100_000)  # long after the warm-up: decay 0.999 exactly
    with torch.no_grad():
        before = ema.module.weight.item()
        model.weight.fill_(5.0)
        ema.update_parameters(model)
    assert ema.module.weight.item() == pytest.approx(0.999 * before + 0.001 * 5.0)
