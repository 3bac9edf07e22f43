"""The real dataset, as load_data() returns it."""

from __future__ import annotations

import numpy as np

from fmnist import data


def test_load_data_real(fashion):
    (x, y), (xt, yt) = fashion
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert data.class_counts(y).tolist() == [6000] * 10
    assert data.class_counts(yt).tolist() == [1000] * 10
    assert y[0] == 9  # the first training image is an ankle boot
    assert len(data.CLASSES) == 10 and data.CLASSES[9] == "Ankle boot"
