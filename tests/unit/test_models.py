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


@pytest.fixture
def torch_pooling_calls(monkeypatch):
    """Counts the calls that reach PyTorch's own pooling (nn.MaxPool2d.forward)."""
    calls = []
    torch_forward = torch.nn.MaxPool2d.forward

    def counted(self, x):
        calls.append(x.shape)
        return torch_forward(self, x)

    monkeypatch.setattr(torch.nn.MaxPool2d, "forward", counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32])
@pytest.mark.parametrize("size", [(26, 26), (11, 11), (7, 8), (2, 3)])
def test_pooling_in_inference_mode_equals_torchs(size, dtype, torch_pooling_calls):
    """The inference path (strided maxima) gives nn.MaxPool2d's values, odd sizes floored."""
    torch.manual_seed(0)
    x = (torch.randn(3, 5, *size) * 100).to(dtype)
    x[0, 0, 0, :2] = 7  # a tie inside one window
    if dtype.is_floating_point:
        x[1, 1, 0, 0] = float("nan")  # NaN wins its window in both
        x[2, 2, :2, :2] = float("-inf")
    ref = torch.nn.MaxPool2d(2)(x)
    with torch.inference_mode():
        for fmt in (torch.channels_last, torch.contiguous_format):  # fast path, then torch's
            out = MaxPool2d()(x.contiguous(memory_format=fmt))
            assert out.shape == ref.shape and out.dtype == dtype
            assert torch.equal(out.nan_to_num(), ref.nan_to_num())
            assert torch.equal(out.isnan(), ref.isnan())
            assert out.is_contiguous(memory_format=fmt)
    assert len(torch_pooling_calls) == 2  # the reference and the contiguous input only


def test_pooling_outside_inference_mode_is_torchs(torch_pooling_calls):
    """no_grad alone, changed settings and too-small inputs all take PyTorch's kernel."""
    x = torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # forward-mode AD and vmap can run here: PyTorch's rules apply
        MaxPool2d()(x)
    with torch.inference_mode():
        pool = MaxPool2d()
        pool.stride = 1
        assert pool(x).shape == (2, 3, 5, 5)
        with pytest.raises(RuntimeError, match="Output size is too small"):
            MaxPool2d()(torch.zeros(1, 3, 1, 5).contiguous(memory_format=torch.channels_last))
    assert len(torch_pooling_calls) == 3


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
    assert (grads[0][0, 0, :2, :2] == 1).sum() == 1


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="Valid models: .*seed"):
        create_model("vgg")
    with pytest.raises(ConfigError, match="Bad arguments .* 'width': 32, 'hidden': 128"):
        create_model("seed", nonsense=1)
    with pytest.raises(ConfigError, match=r"'dropout': 'x'.* \('<' not supported.*'dropout': 0.0"):
        create_model("seed", dropout="x")  # the constructor's own error, and what it takes
    with pytest.raises(ConfigError, match="'members': 'required'"):
        create_model("ensemble", nonsense=1)
    for name, kwargs in [
        ("fast", {"widths": [0]}),
        ("fast", {"hidden": -5}),
        ("seed", {"width": 0}),
    ]:
        with pytest.raises(ConfigError, match="Bad arguments .*its arguments and defaults"):
            create_model(name, **kwargs)  # torch's RuntimeError on a size of 0: said as ours
