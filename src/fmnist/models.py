"""The model registry: a name maps to a constructor; every model returns logits.

Layer sizes are derived from the input shape, never written as magic numbers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

INPUT_SHAPE = (1, 28, 28)  # (C, H, W) of one Fashion-MNIST image
NUM_CLASSES = 10


def _flat_features(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features ``features`` produces for one input of ``input_shape``."""
    was_training = features.training
    features.eval()  # batch norm must not update its running statistics on the dummy input
    with torch.no_grad():
        n = features(torch.zeros(1, *input_shape)).numel()
    features.train(was_training)
    return n


def _dense_head(
    features: nn.Module, input_shape: tuple[int, ...], hidden: int, dropout: float, classes: int
) -> nn.Sequential:
    """Flatten, one hidden dense layer (ReLU, dropout), then the logits: the CNNs' classifier."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_features(features, input_shape), hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, classes),
    )


class MaxPool2d(nn.MaxPool2d):
    """2x2 max pooling (``nn.MaxPool2d(2)``) that skips the maxima's positions at inference.

    PyTorch's CPU pooling always finds where each maximum is (37-46 % of the seed CNN's
    inference). In inference mode a channels_last input is pooled by two elementwise maxima
    of strided views instead: the same values, 1.07-1.24x the images/s (bf16, Zen 4).
    Training (whose backward through the maxima is 4.7x slower) and the ONNX export
    (which keeps MaxPool) take PyTorch's kernel."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H//2, W//2)
        """Return the 2x2 maxima, flooring odd sizes as nn.MaxPool2d does."""
        plain = (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        if (
            not torch.is_inference_mode_enabled()
            or torch.onnx.is_in_onnx_export()
            or plain != (2, 2, 0, 1, False)  # settings changed after construction
            or x.dim() != 4
            or min(x.shape[2:]) < 2  # torch's error: nothing to pool
            or not x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x)
        b, c, h, w = x.shape
        h, w = h // 2, w // 2
        y = x[:, :, : 2 * h, : 2 * w].permute(0, 2, 3, 1)  # (B, 2h, 2w, C), a view
        y = y.reshape(b, h, 2, 2 * w, c)
        y = torch.maximum(y[:, :, 0], y[:, :, 1]).reshape(b, h, w, 2, c)  # rows paired
        return torch.maximum(y[:, :, :, 0], y[:, :, :, 1]).permute(0, 3, 1, 2)  # columns


class SeedCNN(nn.Module):
    """The notebook's CNN: Conv(32) > Pool > Conv(64) > Pool > Dense(128) > Dense(10)."""

    def __init__(
        self,
        input_shape: tuple[int, ...] = INPUT_SHAPE,
        num_classes: int = NUM_CLASSES,
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # Keras applies Conv2D's ReLU before MaxPooling2D. ReLU is monotonic, so pooling
        # first computes exactly the same function, with the ReLU on a quarter of the pixels.
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3),  # Keras Conv2D default: 'valid' padding
            MaxPool2d(),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3),
            MaxPool2d(),
            nn.ReLU(inplace=True),
        )
        self.classifier = _dense_head(self.features, input_shape, hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        """Return logits."""
        return self.classifier(self.features(x))


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FastCNN(nn.Module):
    """A CPU-efficient CNN: per stage a 3x3 conv, then 2x2 max pooling, batch norm and ReLU.

    Pooling before batch norm and ReLU (as in Keller Jordan's airbench) gives the same kind
    of features while the memory-bound elementwise layers touch a quarter of the pixels:
    1.2-1.4x the training speed of conv-BN-ReLU-pool on 2 CPU cores. Three stages take the
    image from 28 to 14, 7 and 3 pixels; a hidden dense layer classifies.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = INPUT_SHAPE,
        num_classes: int = NUM_CLASSES,
        widths: tuple[int, ...] = (24, 48, 96),
        hidden: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        c = input_shape[0]
        for w in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 3, padding=1, bias=False),
                    MaxPool2d(),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                )
            )
            c = w
        self.features = nn.Sequential(*stages)
        self.classifier = _dense_head(self.features, input_shape, hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        """Return logits."""
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """A pre-activation-free ResNet basic block (two 3x3 convs and a shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return relu(body(x) + shortcut(x))."""
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (ResNet-20 with depth 20, width 16) for 28x28 inputs."""

    def __init__(
        self,
        input_shape: tuple[int, ...] = INPUT_SHAPE,
        num_classes: int = NUM_CLASSES,
        depth: int = 20,
        width: int = 16,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 44, ...), got {depth}.")
        n = (depth - 2) // 6
        layers: list[nn.Module] = [_conv_bn(input_shape[0], width)]
        c = width
        for stage in range(3):
            w = width * 2**stage
            for i in range(n):
                layers.append(BasicBlock(c, w, 2 if (stage > 0 and i == 0) else 1))
                c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        """Return logits."""
        return self.classifier(self.features(x))


class Normalized(nn.Module):
    """A registry model behind its input normalisation.

    Input: float32 pixels in [0, 1] shaped (B, 1, 28, 28); output: logits (B, 10). Keeping
    the normalisation inside the module means predict, serve and the ONNX graph cannot
    drift from training.
    """

    def __init__(
        self, net: nn.Module, mean: float = 0.0, std: float = 1.0, temperature: float = 1.0
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        # Temperature scaling: the logits are divided by T, fitted on the validation split
        # after training, so that the probabilities match the accuracy (labels do not
        # change). Kept in model.json beside mean and std, not in the weights file.
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    @classmethod
    def from_meta(cls, net: nn.Module, normalization: dict[str, Any]) -> Normalized:
        """Wrap ``net`` as model.json's "normalization" describes (no temperature: 1)."""
        n = normalization
        return cls(net, n["mean"], n["std"], n.get("temperature", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for [0, 1] pixels."""
        return self.net((x - self.mean) / self.std) / self.temperature


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 28, 28) -> float32 pixels in [0, 1] shaped (B, 1, 28, 28)."""
    return x.unsqueeze(1).float().div_(255.0)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "seed": SeedCNN,
    "fast": FastCNN,
    "resnet": ResNet,
}

DESCRIPTIONS: dict[str, str] = {
    "seed": "the notebook's CNN: 2 conv + 2 dense layers, no batch norm",
    "fast": "CPU-efficient 3-conv CNN, pooling before batch norm (the default preset)",
    "resnet": "ResNet-20 style residual network (the best preset)",
}


ENSEMBLE = "ensemble"  # the model name `fmnist ensemble` writes into model.json (ensemble.py)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with constructor arguments ``kwargs``."""
    ctor: Callable[..., nn.Module]
    if name == ENSEMBLE:  # written by `fmnist ensemble`; not trainable, so not in MODELS
        from .ensemble import Ensemble

        ctor = Ensemble.from_specs
    else:
        try:
            ctor = MODELS[name]
        except KeyError:
            raise ConfigError(
                f"Unknown model {name!r}. Valid models: {', '.join(sorted(MODELS))}."
            ) from None
    try:
        return ctor(**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # RuntimeError: a size of 0 or less
        known = {p.name: "required" if p.default is p.empty else p.default
                 for p in inspect.signature(ctor).parameters.values()}  # fmt: skip
        raise ConfigError(f"Bad arguments {kwargs} for model {name!r} ({e}); its arguments "
                          f"and defaults: {known}.") from None  # fmt: skip


def count_params(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """Return forward FLOPs for one image (a multiply-add counts as 2), via torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(model: torch.nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> str:
    """A Keras-style table of the layers, their output shapes and parameter counts."""
    rows: list[tuple[str, str, int]] = []
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]

    def record(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else "?"
            params = sum(p.numel() for p in module.parameters())
            rows.append((f"{name} ({type(module).__name__})", str(shape), params))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in leaves]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()  # batch norm must not update its statistics on the dummy input
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'layer (type)':{width}s}{'output shape (C, H, W)':24s}{'params':>10s}"]
    lines.append("-" * len(lines[0]))
    lines += [f"{n:{width}s}{s:24s}{p:>10,d}" for n, s, p in rows]
    lines.append("-" * len(lines[0]))
    lines.append(f"total params: {total:,d} (trainable: {trainable:,d})")
    return "\n".join(lines)
