"""Every registry model: output shape, finite forward and backward; the seed's size."""

from __future__ import annotations

import pytest
import torch

from fmnist.models import MODELS, count_flops, count_params, create_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.rand(4, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (4, 10)
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_seed_is_the_notebook_cnn():
    model = create_model("seed")
    assert count_params(model) == 225_034
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert 5.2e6 < count_flops(model) < 5.3e6


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="Valid models: .*seed"):
        create_model("vgg")
    with pytest.raises(ValueError, match="Bad arguments"):
        create_model("seed", nonsense=1)
