"""Batch inference and metrics on tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import to_input


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    tta: bool = False,
    channels_last: bool = True,
) -> torch.Tensor:
    """Logits (N, 10) for uint8 images (N, 28, 28), in large batches; flip-TTA if asked."""
    model.eval()
    device = next(model.parameters()).device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i : i + batch_size].to(device)).contiguous(memory_format=fmt)
        logits = model(x)
        if tta:  # clothes are left-right symmetric: average over the mirror image
            logits = (logits + model(x.flip(-1))) / 2
        out.append(logits)
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits`` against integer ``labels``."""
    labels = labels.to(logits.device).long()
    loss = F.cross_entropy(logits.float(), labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc
