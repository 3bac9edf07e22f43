"""Study storage for `fmnist tune`: database URLs, drivers, heartbeats and connection errors.

A study lives in an SQLAlchemy database: SQLite for one machine, PostgreSQL (psycopg 3,
from the ``tune`` extra) or MySQL for several. Every running trial writes a heartbeat into
it; a trial silent for ``GRACE_BEATS`` beats is failed and retried once by the next worker
to start a trial (Optuna's ``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StudyError

if TYPE_CHECKING:
    import optuna

HEARTBEAT_SECONDS = 60  # a running trial's sign of life in the storage, every minute
GRACE_BEATS = 3  # three missed heartbeats: the worker is gone
MAX_RETRY = 1  # a dead worker's trial is rerun once; a second death leaves it failed


def storage_url(storage: str) -> str:
    """``storage`` with the psycopg (3) driver named in a ``postgresql://`` URL.

    SQLAlchemy 2.0 reads ``postgresql://`` as psycopg2 and 2.1 as psycopg 3; naming the
    driver makes both use the one the ``tune`` extra installs.
    """
    for scheme in ("postgresql://", "postgres://"):
        if storage.startswith(scheme):
            return "postgresql+psycopg://" + storage[len(scheme) :]
    return storage


def shown_url(storage: str) -> str:
    """``storage`` fit to print: its password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:
        return storage


def storage_error(storage: str, e: Exception) -> StudyError:
    """What went wrong opening ``storage``, and what to do about it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DatabaseError, OperationalError

    shown = shown_url(storage)
    if isinstance(e, OperationalError):  # the server refused us or could not be reached
        url = make_url(storage)
        cause = " ".join(str(e.orig).split())  # libpq's message spans lines
        folder = Path(url.database or ".").parent  # SQLite's file: its folder must exist
        if url.get_backend_name() == "sqlite" and not folder.is_dir():
            return StudyError(f"Cannot open the study database {shown}: {cause}. Its folder "
                              f"{folder} does not exist: create it first.")  # fmt: skip
        if url.host is None:
            return StudyError(f"Cannot open the study database {shown}: {cause}.")
        return StudyError(
            f"Cannot connect to the study database on host {url.host} port "
            f"{url.port or 'default'} ({shown}): {cause}. Check the host, port, user name and "
            "password in --storage, and that the server runs and accepts connections from "
            "this machine."
        )
    if type(e) is DatabaseError and "not a database" in str(e.orig):  # SQLite's own words
        return StudyError(
            f"Cannot open the study storage {shown}: {make_url(storage).database} is not an "
            f"SQLite database ({e.orig}). Fix: name a new file, which is then created, or a "
            "study database that `fmnist tune` made."
        )
    if isinstance(e, ImportError):
        return StudyError(
            f"Cannot open the study storage {shown}: its database driver is missing ({e}). "
            "PostgreSQL needs psycopg 3: pip install 'fmnist[tune]'; MySQL needs pymysql "
            "and a mysql+pymysql:// URL."
        )
    return StudyError(
        f"Cannot open the study storage {shown!r} ({type(e).__name__}: {e}). Expected an "
        "SQLAlchemy URL such as sqlite:///study.db, postgresql://user:password@host/db or "
        "mysql+pymysql://user:password@host/db, with its database driver installed."
    )


def open_storage(storage: str, heartbeat: int = HEARTBEAT_SECONDS) -> optuna.storages.RDBStorage:
    """The Optuna storage at URL ``storage``, with heartbeats every ``heartbeat`` seconds."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if not isinstance(heartbeat, int) or heartbeat < 1:
        raise StudyError(
            f"The heartbeat must be a whole number of seconds >= 1, got {heartbeat!r}."
        )
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" (since Optuna 2.9)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                storage_url(storage),
                heartbeat_interval=heartbeat,
                grace_period=GRACE_BEATS * heartbeat,
                heartbeat_stale_trial_callback=(
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
                ),
            )
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise storage_error(storage, e) from None
