"""Augmentations on whole batches of uint8 images (B, H, W), vectorised, on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(n: int, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=x.device, generator=gen)


def flip(x: torch.Tensor, p: float = 0.5, gen: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``; x is (B, H, W)."""
    mask = _rand(x.shape[0], x, gen) < p
    return torch.where(mask[:, None, None], x.flip(-1), x)


def translate(x: torch.Tensor, pad: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels in each direction, filling with zeros."""
    if pad <= 0:
        return x
    b, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, H + 2p, W + 2p), zeros = background
    shifts = torch.randint(0, 2 * pad + 1, (2, b), device=x.device, generator=gen)
    rows = shifts[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = shifts[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def erase(
    x: torch.Tensor,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): zero one random rectangle per image with prob. p."""
    b, h, w = x.shape
    area = (scale[0] + (scale[1] - scale[0]) * _rand(b, x, gen)) * h * w
    log_r = torch.log(torch.tensor(ratio, device=x.device))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * _rand(b, x, gen))
    eh = (area * aspect).sqrt().round().clamp(1, h).long()  # (B,) rectangle heights
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (_rand(b, x, gen) * (h - eh + 1)).long()
    left = (_rand(b, x, gen) * (w - ew + 1)).long()
    r = torch.arange(h, device=x.device)[None, :, None]
    c = torch.arange(w, device=x.device)[None, None, :]
    inside = (
        (r >= top[:, None, None])
        & (r < (top + eh)[:, None, None])
        & (c >= left[:, None, None])
        & (c < (left + ew)[:, None, None])
    )
    apply = (_rand(b, x, gen) < p)[:, None, None]
    return x.masked_fill(inside & apply, 0)


def augment_batch(
    x: torch.Tensor,
    *,
    flip_p: float = 0.0,
    translate_px: int = 0,
    erase_p: float = 0.0,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the configured augmentations to a (B, H, W) uint8 batch."""
    if flip_p > 0:
        x = flip(x, flip_p, gen)
    if translate_px > 0:
        x = translate(x, translate_px, gen)
    if erase_p > 0:
        x = erase(x, erase_p, gen=gen)
    return x
