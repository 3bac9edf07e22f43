"""Photo-domain augmentation: dataset images made to look like what the photo pipeline
makes of real phone photos (fmnist.segment, then fmnist.images.prepare).

Measured on the development photos (never trained on): segmented photos keep prints and
stripes, uneven light, a little floor or hanger at the edges, blur, other contrasts and
gammas, small tilts, other aspect ratios and off-centre crops, shoes come in pairs, and
tops laid flat spread their sleeves out from the body.
Everything works on whole batches of uint8 (B, 28, 28) tensors, like fmnist.augment.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SHOES = (5, 7, 9)  # Sandal, Sneaker, Ankle boot: photographed as pairs
SLEEVED = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt: laid flat, arms spread


def _u(n: int, lo: float, hi: float, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=x.device, generator=gen)


def _trim(s: torch.Tensor) -> torch.Tensor:
    """The (H, W) image cut to the rows and columns that hold the shoe."""
    rows, cols = (s > 0.1).any(1).nonzero()[:, 0], (s > 0.1).any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        return s
    return s[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit(s: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The image scaled so its longer side fills (h, w), centred on black, like prepare."""
    scale = min(h / s.shape[0], w / s.shape[1])
    size = (max(1, round(s.shape[0] * scale)), max(1, round(s.shape[1] * scale)))
    small = F.interpolate(s[None, None], size=size, mode="bilinear", antialias=True)[0, 0]
    out = s.new_zeros(h, w)
    top, left = (h - size[0] + 1) // 2, (w - size[1] + 1) // 2
    out[top : top + size[0], left : left + size[1]] = small
    return out


def _pair(s: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """One shoe made a pair: from above (toes up or down, a left and a right foot side by
    side, narrower than in profile) or, one time in four, from the side, one shoe behind
    the other."""
    r = torch.rand(4, device=s.device, generator=gen).tolist()
    if r[0] < 0.25:
        dy, dx = 2 + int(5 * r[1]), int(7 * r[2]) - 3
        pair = F.pad(_trim(s), (max(dx, 0), max(-dx, 0), dy, 0))
        return torch.maximum(pair, F.pad(_trim(s), (max(-dx, 0), max(dx, 0), 0, dy)))
    top = _trim(s.rot90(1 if r[1] < 0.5 else -1))
    width = max(2, round(top.shape[1] * (0.7 + 0.3 * r[2])))  # the top of a shoe is narrow
    top = F.interpolate(top[None, None], size=(top.shape[0], width), mode="bilinear")[0, 0]
    gap, dy = 1 + int(3 * r[3]), int(torch.randint(-2, 3, (1,), device=s.device, generator=gen))
    left = F.pad(top, (0, gap, max(dy, 0), max(-dy, 0)))
    return torch.cat([left, F.pad(top.flip(-1), (0, 0, max(-dy, 0), max(dy, 0)))], dim=1)


def pairs(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Shoes made pairs, as phone photos show them, with probability ``p`` each.

    x is float (B, H, W); returns the pairs trimmed and refitted to the canvas like the
    pipeline does.
    """
    pick = (torch.rand(x.shape[0], device=x.device, generator=gen) < p).nonzero()[:, 0].tolist()
    if not pick:
        return x
    x = x.clone()
    for i in pick:
        x[i] = _fit(_pair(x[i], gen), *x.shape[1:])
    return x


def spread(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Sleeves swung out from the shoulders (14-40 degrees each), as tops laid flat on a
    floor or bed show them, trimmed and refitted to the canvas; x float (B, H, W).

    The dataset's product shots hang the sleeves beside the body: the columns outside
    each shoulder are rotated outward about it; the torso between them stays.
    """
    b, h, w = x.shape
    if b == 0:
        return x.clone()
    big = F.pad(x, (w // 2, w // 2, h // 4, h // 4))  # room for the arms
    rows, cols = big.shape[1:]
    r = torch.arange(rows, device=x.device, dtype=x.dtype)[None, :, None].expand(b, rows, cols)
    c = torch.arange(cols, device=x.device, dtype=x.dtype)[None, None, :].expand(b, rows, cols)
    out = big
    r0 = h // 4 + h * _u(b, 0.08, 0.2, x, gen)[:, None, None]  # the shoulders' row
    for side in (-1, 1):
        inset = w * _u(b, 0.15, 0.25, x, gen)[:, None, None]
        c0 = w // 2 + (inset if side < 0 else w - inset)  # this shoulder's column
        theta = -side * _u(b, 0.25, 0.7, x, gen)[:, None, None]  # radians, outward
        dr, dc = r - r0, c - c0
        # Each output pixel samples the source rotated back about the shoulder.
        sr = r0 + dr * theta.cos() - dc * theta.sin()
        sc = c0 + dr * theta.sin() + dc * theta.cos()
        grid = torch.stack([2 * (sc + 0.5) / cols - 1, 2 * (sr + 0.5) / rows - 1], -1)
        arm = F.grid_sample(big[:, None], grid, align_corners=False)[:, 0]
        arm = torch.where((sc - c0) * side > 0, arm, 0.0)  # only the sleeve band moves
        out = torch.where(dc * side > 0, arm, out)
    return torch.stack([_fit(_trim(o), h, w) for o in out])


def _grid(b: int, h: int, w: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.linspace(-1, 1, h, device=x.device)[None, :, None].expand(b, h, w)
    c = torch.linspace(-1, 1, w, device=x.device)[None, None, :].expand(b, h, w)
    return r, c


def texture(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Stripes or checks of random frequency, angle and depth across the garment."""
    b, h, w = x.shape
    r, c = _grid(b, h, w, x)
    theta = _u(b, 0, math.pi, x, gen)[:, None, None]
    freq = _u(b, 2.0, 7.0, x, gen)[:, None, None]  # cycles across the image
    phase = _u(b, 0, 2 * math.pi, x, gen)[:, None, None]
    wave = torch.sin(math.pi * freq * (r * theta.cos() + c * theta.sin()) + phase)
    check = torch.rand(b, device=x.device, generator=gen)[:, None, None] < 0.3
    wave = torch.where(
        check, wave * torch.sin(math.pi * freq * (c * theta.cos() - r * theta.sin())), wave
    )
    depth = _u(b, 0.15, 0.6, x, gen)[:, None, None]
    return x * (1 - depth * 0.5 * (1 + wave))


def light(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """A linear ramp of light in a random direction, then a gamma and contrast change."""
    b, h, w = x.shape
    r, c = _grid(b, h, w, x)
    theta = _u(b, 0, 2 * math.pi, x, gen)[:, None, None]
    ramp = 1 + _u(b, 0, 0.5, x, gen)[:, None, None] * (r * theta.cos() + c * theta.sin())
    gamma = torch.exp(_u(b, math.log(0.5), math.log(2.0), x, gen))[:, None, None]
    return (x.clamp(0, 1) * ramp).clamp(0, 1) ** gamma


def clutter(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Leftover background at one edge (a band of noisy floor) or a hanger-like line on top."""
    b, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    width = torch.randint(1, 4, (b, 1, 1), device=x.device, generator=gen)
    side = torch.randint(0, 4, (b, 1, 1), device=x.device, generator=gen)
    band = torch.where(side == 0, rows < width, torch.where(side == 1, rows >= h - width,
           torch.where(side == 2, cols < width, cols >= w - width)))  # fmt: skip
    level = _u(b, 0.1, 0.4, x, gen)[:, None, None]
    noise = torch.rand(x.shape, device=x.device, generator=gen)
    hanger = (rows <= 1) & ((cols - w // 2).abs() <= _u(b, 2, 8, x, gen)[:, None, None])
    use_hanger = (torch.rand(b, device=x.device, generator=gen) < 0.3)[:, None, None]
    mask = torch.where(use_hanger, hanger, band)
    return torch.where(mask & (x < 0.05), level * (0.5 + noise), x)


def geometry(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """A small rotation, scale and aspect change and an off-centre shift."""
    b = x.shape[0]
    angle = _u(b, -0.2, 0.2, x, gen)  # radians, about +-11 degrees
    scale = _u(b, 0.85, 1.1, x, gen)
    aspect = torch.exp(_u(b, -0.15, 0.15, x, gen))
    sx, sy = 1 / (scale * aspect), aspect / scale  # output -> input sampling
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([cos * sx, -sin * sx, _u(b, -0.12, 0.12, x, gen)], 1),
            torch.stack([sin * sy, cos * sy, _u(b, -0.12, 0.12, x, gen)], 1),
        ],
        1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, (b, 1, *x.shape[1:]), align_corners=False)
    return F.grid_sample(x[:, None], grid, align_corners=False)[:, 0]


def blur_noise(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """A 3x3 Gaussian blur on half of the images, sensor noise on the garment."""
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    k = (k[:, None] * k[None, :] / 16)[None, None]
    blurred = F.conv2d(x[:, None], k, padding=1)[:, 0]
    pick = (torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5)[:, None, None]
    x = torch.where(pick, blurred, x)
    sigma = _u(x.shape[0], 0, 0.04, x, gen)[:, None, None]
    noise = sigma * torch.randn(x.shape, device=x.device, generator=gen)
    return torch.where(x > 0.05, x + noise, x)  # the segmented background stays black


def photo(
    x: torch.Tensor, y: torch.Tensor, p: float, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Photo-domain augmentation of each image with probability ``p``; x (B, H, W) uint8."""
    b = x.shape[0]
    pick = torch.rand(b, device=x.device, generator=gen) < p
    if p <= 0 or not pick.any():
        return x
    f = x[pick].float() / 255
    ys = y[pick]
    shoe = torch.isin(ys, torch.tensor(SHOES, device=x.device))
    if shoe.any():
        f[shoe] = pairs(f[shoe], 0.5, gen)
    sleeved = torch.isin(ys, torch.tensor(SLEEVED, device=x.device))
    flat = sleeved & (torch.rand(len(f), device=x.device, generator=gen) < 0.5)
    if flat.any():
        f[flat] = spread(f[flat], gen)
    steps = (texture, light, clutter, geometry, blur_noise)
    chance = (0.4, 0.6, 0.3, 0.7, 1.0)
    for step, q in zip(steps, chance, strict=True):
        use = (torch.rand(len(f), device=x.device, generator=gen) < q)[:, None, None]
        f = torch.where(use, step(f, gen), f)
    # The pipeline stretches the garment to the full range: so does this.
    top = f.flatten(1).amax(1).clamp_min(0.2)[:, None, None]
    out = x.clone()
    out[pick] = (f / top * 255).round().clamp(0, 255).to(torch.uint8)
    return out
