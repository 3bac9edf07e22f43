"""Fixtures of the integration tests: a throwaway PostgreSQL server (pgserver.py)."""

from __future__ import annotations

import pytest
from pgserver import Unavailable, start_postgres


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this test session's own, removed afterwards."""
    try:
        pg = start_postgres()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres.url(postgres.create_database())
