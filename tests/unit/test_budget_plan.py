"""--budget's arithmetic: slower steps, fewer epochs; a budget too small says what fits."""

from __future__ import annotations

import pytest

from fmnist.budget import MARGIN, TEST_IMAGES, Timing, epochs_for
from fmnist.errors import ConfigError


def test_slower_steps_give_fewer_epochs_and_the_plan_fits_the_budget() -> None:
    fast, slow = Timing(0.02, 422, 1e-4), Timing(0.08, 422, 4e-4)
    e_fast, e_slow = epochs_for(60, fast, 6000, "best"), epochs_for(60, slow, 6000, "best")
    assert e_slow < e_fast
    for t, e in ((fast, e_fast), (slow, e_slow)):
        planned = e * t.epoch_seconds(6000) + t.image_seconds * (TEST_IMAGES + 6000)
        assert planned <= 60 * 60 * MARGIN < planned + t.epoch_seconds(6000)  # the most that fit


def test_a_budget_below_one_epoch_names_one_that_fits() -> None:
    t = Timing(0.1, 422, 1e-3)  # about 48 s an epoch
    with pytest.raises(ConfigError, match=r"does not fit one epoch of preset 'best'") as e:
        epochs_for(0.5, t, 6000, "best")
    need = int(str(e.value).split("--budget ")[1].split()[0])
    assert epochs_for(need, t, 6000, "best") >= 1  # the budget named fits one epoch...
    with pytest.raises(ConfigError):
        epochs_for(need - 1, t, 6000, "best")  # ...and is the smallest in whole minutes


def test_the_seconds_the_timing_took_come_off_the_budget() -> None:
    t = Timing(0.02, 422, 1e-4)  # about 9 s an epoch
    assert epochs_for(2, t, 6000, "default", spent=30) < epochs_for(2, t, 6000, "default")


@pytest.mark.parametrize("minutes", [0, -5, float("nan"), float("inf")])
def test_a_budget_must_be_positive_minutes(minutes: float) -> None:
    with pytest.raises(ConfigError, match="positive number of minutes"):
        epochs_for(minutes, Timing(0.01, 10, 1e-4), 100, "default")
