"""Outlier exposure: the made garments, their labels and the loss that flattens them."""

from __future__ import annotations

import pytest
import torch

from fmnist import outliers
from fmnist.config import TrainConfig
from fmnist.errors import ConfigError


def batch(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Trousers (two legs, full height) and dresses (a trapezoid) on black, and other classes."""
    x = torch.zeros(n, 28, 28, dtype=torch.uint8)
    y = torch.arange(n) % 10
    x[y == 1, :, 6:13] = 200
    x[y == 1, :, 15:22] = 200
    x[y == 1, :6, 6:22] = 200  # the waist joins the legs
    for r in range(28):
        x[y == 3, r, 12 - r // 4 : 16 + r // 4] = 180
    x[(y != 1) & (y != 3), 6:22, 6:22] = 150
    return x, y


def test_fraction_labels_and_the_rest_untouched() -> None:
    x, y = batch()
    assert outliers.expose(x, y, 0.0)[0] is x
    xo, yo = outliers.expose(x, y, 0.3, torch.Generator().manual_seed(0))
    made = yo == outliers.OUTLIER
    assert 30 <= int(made.sum()) <= 90  # about 60 of 200
    assert torch.equal(xo[~made], x[~made]) and torch.equal(yo[~made], y[~made])
    assert xo.dtype == torch.uint8 and xo.shape == x.shape
    assert (xo[made].flatten(1).amax(1) > 100).all()  # every outlier shows something
    again = outliers.expose(x, y, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], xo) and torch.equal(again[1], yo)


def test_shorts_are_the_top_of_trousers_refitted() -> None:
    x, _ = batch()
    cut = outliers._cut(x[1].float() / 255, 0.0, 0.4)  # the top 40 % of a trouser
    rows, cols = (cut > 0.1).any(1), (cut > 0.1).any(0)
    assert int(cols.sum()) >= 27  # wider than tall: refitted to the full width
    assert int(rows.sum()) < 20
    assert (cut[-3:, 13:15] < 0.1).all()  # the gap between the legs is still there


def test_hats_are_trimmed_and_centred_like_prepare() -> None:
    hats = outliers.hats(16, 28, 28, torch.zeros(1), torch.Generator().manual_seed(0))
    assert hats.shape == (16, 28, 28)
    fills = ((hats > 0.05).any(1).sum(1) >= 27) | ((hats > 0.05).any(2).sum(1) >= 27)
    assert fills.all()


def test_loss_pushes_outliers_to_the_uniform_answer() -> None:
    y = torch.tensor([2, outliers.OUTLIER])
    logits = torch.tensor([[0.0] * 10, [5.0] + [0.0] * 9], requires_grad=True)
    loss = outliers.loss(logits, y)
    loss.backward()
    grad = logits.grad[1]
    assert grad[0] > 0 and (grad[1:] < 0).all()  # lowers the confident class, raises the rest
    flat = outliers.loss(torch.zeros(2, 10), y)
    expected = (torch.log(torch.tensor(10.0)) * (1 + outliers.WEIGHT)) / 2
    assert torch.isclose(flat, expected)


def test_config_refuses_a_whole_batch_of_outliers() -> None:
    with pytest.raises(ConfigError, match="outliers must be a fraction in"):
        TrainConfig(outliers=1.0)
