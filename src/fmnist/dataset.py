"""``fmnist.FashionMNIST``: the dataset with torchvision's contract, without torchvision.

    from fmnist import FashionMNIST
    from torch.utils.data import DataLoader

    train = FashionMNIST(train=True, transform=lambda im: torch.from_numpy(np.array(im)))
    image, label = train[0]  # a PIL image (mode "L", 28x28) through the transform, an int

The same arguments, attributes and items as ``torchvision.datasets.FashionMNIST``, over
the verified files :func:`fmnist.data.load_data` reads (``root``: a directory holding the
four files, or None for the usual sources: the cache, Debian's package, a download).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from .data import CLASSES, load_data


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as a map-style torch Dataset of (PIL image, int) items."""

    classes: ClassVar[list[str]] = list(CLASSES)

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable[[Image.Image], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        download: bool = True,
    ) -> None:
        root = os.path.expanduser(root) if root else None  # "" and None: the usual sources
        if root is not None and download and not os.path.lexists(root):
            os.makedirs(root)  # as torchvision does; the files then come from the other sources
        (x_train, y_train), (x_test, y_test) = load_data(root, download=download)
        x, y = (x_train, y_train) if train else (x_test, y_test)
        self.root, self.train = root, train
        self.transform, self.target_transform = transform, target_transform
        self.data = torch.from_numpy(np.ascontiguousarray(x))  # (N, 28, 28) uint8
        self.targets = torch.from_numpy(y.astype(np.int64))  # (N,) int64

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> label, as torchvision has it."""
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        """The number of images: 60,000 (train) or 10,000 (test)."""
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """Image ``index`` as a grey PIL image and its label, through the transforms."""
        image = Image.fromarray(self.data[index].numpy(), mode="L")
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return (
            f"Dataset FashionMNIST\n    Number of datapoints: {len(self)}\n"
            f"    Root location: {self.root or 'fmnist default sources'}\n    Split: {split}"
        )
