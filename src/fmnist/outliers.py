"""Synthetic garments that are no Fashion-MNIST class, for outlier exposure.

Users photograph shorts, skirts and hats too, and the right answer for them is "unsure".
A model trained on the ten classes alone calls shorts Trouser and hats Bag with
confidence. Outlier exposure (Hendrycks et al. 2019) trains the model to spread its
probability evenly over the classes on such inputs; here they are made from the training
images themselves, so the model is still trained on Fashion-MNIST only: shorts are the
top of a pair of trousers, skirts the lower part of a dress, hats a crown on a brim or a
peak. Works on whole batches of uint8 (B, 28, 28) tensors, like fmnist.photoaug.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .photoaug import _fit, _grid, _trim, _u

TROUSER, DRESS = 1, 3
OUTLIER = -1  # the label an outlier gets in the batch: no class is right
WEIGHT = 0.5  # of the outliers' loss against the classes' (Hendrycks et al.'s lambda)


def _cut(s: torch.Tensor, top: float, bottom: float) -> torch.Tensor:
    """Rows ``top`` to ``bottom`` (fractions of its height) of the trimmed garment, refitted."""
    g = _trim(s)
    h = g.shape[0]
    a, b = round(top * h), max(round(top * h) + 2, round(bottom * h))
    return _fit(g[a:b], *s.shape)


def hats(n: int, h: int, w: int, ref: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """``n`` hats (n, h, w) float in [0, 1]: a rounded crown on a brim, or a cap with a peak,
    seen from the front or a little from above."""
    r, c = _grid(n, h, w, ref)
    cw = _u(n, 0.45, 0.8, ref, gen)[:, None, None]  # crown half-width
    ch = _u(n, 0.4, 0.9, ref, gen)[:, None, None]  # crown height
    base = _u(n, 0.1, 0.5, ref, gen)[:, None, None]  # where the crown meets the brim (row)
    crown = ((c / cw) ** 2 + ((r - base) / ch) ** 2 <= 1) & (r <= base + 0.05)
    bw = cw * _u(n, 1.0, 1.6, ref, gen)[:, None, None]  # a wide brim or none
    bh = _u(n, 0.06, 0.25, ref, gen)[:, None, None]
    brim = (c / bw) ** 2 + ((r - base) / bh) ** 2 <= 1
    side = torch.where(torch.rand(n, 1, 1, device=ref.device, generator=gen) < 0.5, 1.0, -1.0)
    peak = ((c - side * cw) / (0.6 * cw)) ** 2 + ((r - base) / bh) ** 2 <= 1
    cap = torch.rand(n, 1, 1, device=ref.device, generator=gen) < 0.4
    shape = crown | torch.where(cap, peak & (c * side > 0), brim)
    level = _u(n, 0.5, 1.0, ref, gen)[:, None, None]
    shade = 1 - _u(n, 0, 0.5, ref, gen)[:, None, None] * (r - base).abs()  # rounded, lit
    out = (shape * level * shade).clamp(0, 1)
    return torch.stack([_fit(_trim(o), h, w) for o in out])  # trimmed and centred, like prepare


def expose(
    x: torch.Tensor, y: torch.Tensor, p: float, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fraction ``p`` of the batch replaced by outliers; returns (x, y) with OUTLIER labels.

    Each outlier is, with equal chances, shorts (from a trouser of the batch), a skirt
    (from a dress of the batch) or a hat; without a trouser or a dress, a hat.
    """
    b, h, w = x.shape
    pick = (torch.rand(b, device=x.device, generator=gen) < p).nonzero()[:, 0].tolist()
    if not pick:
        return x, y
    x, y = x.clone(), y.clone()
    kinds = torch.randint(0, 3, (len(pick),), device=x.device, generator=gen).tolist()
    made = hats(len(pick), h, w, x.float(), gen)
    for j, (i, kind) in enumerate(zip(pick, kinds, strict=True)):
        src = (y == (TROUSER if kind == 0 else DRESS)).nonzero()[:, 0]
        if kind < 2 and src.numel():
            s = x[src[torch.randint(0, src.numel(), (1,), generator=gen).item()]].float() / 255
            top, bottom = (0, float(_u(1, 0.35, 0.55, s, gen))) if kind == 0 else (
                float(_u(1, 0.45, 0.6, s, gen)), float(_u(1, 0.85, 1.0, s, gen)))  # fmt: skip
            made[j] = _cut(s, top, bottom)
        x[i] = (made[j] * 255).round().clamp(0, 255).to(torch.uint8)
        y[i] = OUTLIER
    return x, y


def loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on the classes; on OUTLIER rows, WEIGHT times the cross-entropy to the
    uniform answer (the mean of -log p over the classes)."""
    ce = F.cross_entropy(logits, y.clamp_min(0), label_smoothing=label_smoothing, reduction="none")
    uniform = -F.log_softmax(logits, dim=1).mean(1)
    return torch.where(y == OUTLIER, WEIGHT * uniform, ce).mean()
