"""Study storage URLs: the PostgreSQL driver named, passwords hidden, heartbeats checked."""

from __future__ import annotations

import pytest

from fmnist.errors import StudyError
from fmnist.storage import open_storage, shown_url, storage_url

pytest.importorskip("sqlalchemy")


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgresql://fmnist:secret@db.example/studies",
            "postgresql+psycopg://fmnist:secret@db.example/studies",
        ),
        ("postgres://u@h:5433/d", "postgresql+psycopg://u@h:5433/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),  # a driver named: kept
        ("sqlite:///study.db", "sqlite:///study.db"),
        ("mysql+pymysql://u:p@h/d", "mysql+pymysql://u:p@h/d"),
    ],
)
def test_postgresql_urls_name_the_psycopg_3_driver(given, used):
    # SQLAlchemy 2.0 would read a bare postgresql:// as psycopg2, which the extra lacks.
    assert storage_url(given) == used


def test_shown_urls_hide_the_password():
    assert shown_url("postgresql://fmnist:secret@db/s") == "postgresql://fmnist:***@db/s"
    assert shown_url("sqlite:///study.db") == "sqlite:///study.db"
    assert shown_url("nonsense") == "nonsense"


@pytest.mark.parametrize("beat", [0, -1, 1.5])
def test_a_heartbeat_must_be_whole_seconds(beat, tmp_path):
    pytest.importorskip("optuna")
    with pytest.raises(StudyError, match=rf"whole number of seconds >= 1, got {beat}"):
        open_storage(f"sqlite:///{tmp_path / 's.db'}", beat)


def test_grace_is_three_beats(tmp_path):
    pytest.importorskip("optuna")
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}", 2)
    assert rdb.heartbeat_interval == 2 and rdb.grace_period == 6
    callback = rdb.get_heartbeat_stale_trial_callback()
    assert type(callback).__name__ == "RetryHeartbeatStaleTrialCallback"
    assert callback._max_retry == 1  # a dead worker's trial is rerun once, not forever
