"""fmnist.FashionMNIST keeps torchvision's contract over the files load_data() reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fmnist import FashionMNIST
from fmnist.data import CLASSES
from fmnist.errors import DataError


def test_it_matches_load_data_element_for_element(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    for train, x, y in ((True, x_train, y_train), (False, x_test, y_test)):
        ds = FashionMNIST(train=train, download=False)
        assert len(ds) == len(y) and ds.data.dtype == torch.uint8
        assert np.array_equal(ds.data.numpy(), x) and np.array_equal(ds.targets.numpy(), y)
        for i in (0, 1, len(ds) - 1):
            image, label = ds[i]
            assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (28, 28)
            assert np.array_equal(np.asarray(image), x[i]) and label == y[i]
            assert type(label) is int
    assert ds.classes == list(CLASSES) and ds.class_to_idx["Ankle boot"] == 9
    assert "Number of datapoints: 10000" in repr(ds) and "Split: Test" in repr(ds)


def test_it_works_in_a_dataloader_with_transforms():
    ds = FashionMNIST(
        train=False,
        transform=lambda im: torch.from_numpy(np.array(im, dtype=np.float32) / 255)[None],
        target_transform=lambda t: t + 100,
        download=False,
    )
    x, y = next(iter(DataLoader(ds, batch_size=64, shuffle=False)))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert y.dtype == torch.int64 and (y >= 100).all()
    assert torch.equal(y - 100, ds.targets[:64])


def test_a_root_that_does_not_exist_is_made_as_torchvision_does(tmp_path, fashion):
    root = tmp_path / "data"
    ds = FashionMNIST(root, train=False)  # torchvision's usual call: root made, data found
    assert root.is_dir() and np.array_equal(ds.data.numpy(), fashion[1][0])
    with pytest.raises(DataError, match=r"nowhere' given by --data-dir \(or .*root=\) does not"):
        FashionMNIST(tmp_path / "nowhere", download=False)  # no download: nothing is made
    assert not (tmp_path / "nowhere").exists()
    assert len(FashionMNIST("", train=False)) == 10_000  # "" as None: the usual sources
