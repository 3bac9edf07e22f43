"""Every registry model: output shape, finite forward and backward; the seed's size."""

from __future__ import annotations

import pytest
import torch

from fmnist.errors import ConfigError
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


def test_seed_computes_the_notebooks_conv_relu_pool_order():
    """Pooling before ReLU is an exact rewrite of Keras's Conv2D(relu) > MaxPooling2D."""
    torch.manual_seed(0)
    model = create_model("seed")
    conv1, _, _, conv2, _, _ = model.features
    relu, pool = torch.nn.ReLU(), torch.nn.MaxPool2d(2)
    keras_order = torch.nn.Sequential(conv1, relu, pool, conv2, relu, pool, model.classifier)
    x = torch.randn(8, 1, 28, 28)  # negative pixels too: whole windows below zero
    out, ref = model(x), keras_order(x)
    assert torch.equal(out, ref)
    grad, grad_ref = (torch.autograd.grad(y.square().sum(), conv1.weight)[0] for y in (out, ref))
    assert torch.equal(grad, grad_ref)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="Valid models: .*seed"):
        create_model("vgg")
    with pytest.raises(ConfigError, match="Bad arguments"):
        create_model("seed", nonsense=1)
