"""Every registry model: output shape, finite forward and backward; the seed's size."""

from __future__ import annotations

import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.models import MODELS, MaxPool2d, count_flops, count_params, create_model


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(26, 26), (11, 11), (7, 8), (2, 3)])
def test_pooling_without_gradients_equals_torchs(size, dtype):
    """The inference path (strided maxima) gives nn.MaxPool2d's values, odd sizes floored."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, *size).to(dtype)
    x[0, 0, 0, :2] = 7.0  # a tie inside one window
    ref = torch.nn.MaxPool2d(2)(x)
    with torch.no_grad():
        for fmt in (torch.channels_last, torch.contiguous_format):  # fast path, then torch's
            out = MaxPool2d()(x.contiguous(memory_format=fmt))
            assert out.shape == ref.shape and out.dtype == dtype
            assert torch.equal(out, ref)
            assert out.is_contiguous(memory_format=fmt)


def test_pooling_a_too_small_input_is_torchs_error():
    with torch.no_grad(), pytest.raises(RuntimeError, match="Output size is too small"):
        MaxPool2d()(torch.zeros(1, 3, 1, 5).contiguous(memory_format=torch.channels_last))


def test_pooling_with_gradients_is_torchs():
    """Training keeps PyTorch's kernel: the same gradient, routed to one maximum per window."""
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    x[0, 0, :2, :2] = 1.0  # a tie: the gradient goes to one of the four, as torch's does
    grads = []
    for pool in (MaxPool2d(), torch.nn.MaxPool2d(2)):
        xi = x.clone().requires_grad_()
        pool(xi).sum().backward()
        grads.append(xi.grad)
    assert torch.equal(grads[0], grads[1])
    assert grads[0][0, 0, :2, :2].sum() == 1.0


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="Valid models: .*seed"):
        create_model("vgg")
    with pytest.raises(ConfigError, match="Bad arguments"):
        create_model("seed", nonsense=1)
