"""Photo-domain augmentation keeps shapes, dtypes, the untouched images and the labels' sense."""

from __future__ import annotations

import pytest
import torch

from fmnist import photoaug


def batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright rectangles on black, like garments in the dataset."""
    x = torch.zeros(n, 28, 28, dtype=torch.uint8)
    x[:, 4:24, 8:20] = 200
    return x, torch.arange(n) % 10


def test_probability_zero_is_the_identity_and_one_changes_every_image() -> None:
    x, y = batch()
    assert torch.equal(photoaug.photo(x, y, 0.0), x)
    out = photoaug.photo(x, y, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert all(not torch.equal(a, b) for a, b in zip(out, x, strict=True))
    assert (out.flatten(1).amax(1) >= 250).all()  # stretched to the full range, like prepare


def test_same_generator_same_batch_and_the_rest_untouched() -> None:
    x, y = batch()
    a = photoaug.photo(x, y, 0.5, torch.Generator().manual_seed(1))
    b = photoaug.photo(x, y, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    same = (a == x).flatten(1).all(1)
    assert 10 < int(same.sum()) < 54  # about half of the images were left as they were


def test_shoe_pairs_are_refitted_and_mostly_two_shoes_side_by_side() -> None:
    x = torch.zeros(32, 28, 28)
    x[:, 10:18, 2:26] = 1.0  # a shoe in profile
    assert torch.equal(photoaug.pairs(x, 0.0, None), x)
    out = photoaug.pairs(x, 1.0, torch.Generator().manual_seed(0))
    cols, rows = (out > 0.1).any(1), (out > 0.1).any(2)  # (32, 28) columns, rows with shoe
    runs = (cols[:, 1:].int() - cols[:, :-1].int()).clamp_min(0).sum(1) + cols[:, 0].int()
    assert 16 <= int((runs >= 2).sum()) < 32  # mostly from above: a left and a right shoe
    assert ((cols.sum(1) >= 27) | (rows.sum(1) >= 27)).all()  # refitted like prepare


def test_spread_swings_the_sleeves_out_and_refits() -> None:
    """A top whose sleeves hang beside the body comes out wider for its height, still
    filling the canvas; only tops (not trousers, shoes or bags) are spread by photo()."""
    x = torch.zeros(16, 28, 28)
    x[:, 2:26, 1:27] = 1.0  # the torso and, in its outer columns, the hanging sleeves
    out = photoaug.spread(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape

    def aspect(a: torch.Tensor) -> torch.Tensor:  # lit columns / lit rows, per image
        return (a > 0.1).any(1).sum(1) / (a > 0.1).any(2).sum(1)

    assert (aspect(out) > aspect(x) * 1.2).all()
    assert (torch.maximum((out > 0.1).any(1).sum(1), (out > 0.1).any(2).sum(1)) >= 27).all()
    assert photoaug.spread(x[:0], None).shape == (0, 28, 28)


@pytest.mark.parametrize(("step", "kinds"), [("spread", "SLEEVED"), ("pairs", "SHOES")])
def test_only_tops_are_spread_and_only_shoes_paired(monkeypatch, step: str, kinds: str) -> None:
    """photo() hands spread() only tops (about half of them) and pairs() only shoes (all of
    them: pairs() picks its own half)."""
    seen = []

    def record(f: torch.Tensor, *args: object) -> torch.Tensor:
        seen.extend(round(float(a.max()) * 255 / 20) - 1 for a in f)  # the label, from below
        return f

    monkeypatch.setattr(photoaug, step, record)
    x, y = batch(200)
    x = (x > 0).to(torch.uint8) * (20 * (y + 1)).to(torch.uint8)[:, None, None]  # 20 per label
    photoaug.photo(x, y, 1.0, torch.Generator().manual_seed(0))
    allowed = getattr(photoaug, kinds)
    assert seen and set(seen) <= set(allowed)
    kind = int(torch.isin(y, torch.tensor(allowed)).sum())
    assert len(seen) < kind if step == "spread" else len(seen) == kind
