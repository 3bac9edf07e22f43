"""Shared fixtures: the real dataset (loaded once) and a small trained run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fashion():
    """The real dataset as ((x_train, y_train), (x_test, y_test))."""
    from fmnist.data import load_data

    return load_data(download=False)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A one-epoch seed run on 10,000 training images (a few seconds)."""
    from fmnist.config import get_preset
    from fmnist.training import train

    out = tmp_path_factory.mktemp("runs") / "small"
    cfg = get_preset("seed", epochs=1, limit_train=12_500)  # 10,000 training images
    return train(cfg, out=out, quiet=True)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point the user cache at an empty temporary directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    return tmp_path / "xdg" / "fmnist"
