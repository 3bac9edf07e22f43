"""A throwaway PostgreSQL server: initdb and pg_ctl in a temporary directory.

The server listens on a free loopback port (password authentication, as a remote server
would ask) and on a Unix socket in its directory, runs as an unprivileged user (PostgreSQL
refuses root: under root the ``postgres`` user, else ``nobody``), and is removed when
stopped. The tests (conftest.py) and benchmarks/tune_kill.py start it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PG_INSTALL = "apt-get install postgresql (`make postgres` does it when run as root)"
PG_USER, PG_PASSWORD = "fmnist", "secret"  # the README's example credentials


class Unavailable(Exception):
    """PostgreSQL cannot be had here; the message says why and how to get it."""


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, else the one of initdb on PATH."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [p for p in found if p.parts[3].isdigit()]
    if found:
        return max(found, key=lambda p: int(p.parts[3])).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_unprivileged(root: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a user other than root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable("running as root without runuser: PostgreSQL refuses to run as root")
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        for path in (root, *root.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        return [runuser, "-u", name, "--"]
    raise Unavailable("running as root with neither a postgres nor a nobody user to run as")


@dataclass
class Postgres:
    """A running throwaway server: where it listens, and how to make databases on it."""

    root: Path
    port: int
    bindir: Path
    as_user: list[str] = field(default_factory=list)

    def url(self, database: str, password: str = PG_PASSWORD) -> str:
        """The README's kind of storage URL for ``database``."""
        return f"postgresql://{PG_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        import psycopg

        name = f"study_{uuid.uuid4().hex[:12]}"
        dsn = f"host={self.root} port={self.port} user={PG_USER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data")]
        subprocess.run([*self.as_user, *pg_ctl, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """Start a new server; :class:`Unavailable` when PostgreSQL or its driver is missing."""
    bindir = pg_bindir()
    if bindir is None:
        raise Unavailable(f"PostgreSQL is not installed: {PG_INSTALL}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable(
            "psycopg, the tune extra's driver, is missing: pip install -e '.[tune]'"
        ) from None
    root = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))  # short: a socket path has 107 bytes
    (root / "pwfile").write_text(PG_PASSWORD + "\n")
    (root / "server.log").touch()
    try:
        as_user = _as_unprivileged(root)
    except Unavailable:
        shutil.rmtree(root)
        raise
    pg = Postgres(root, free_port(), bindir, as_user)

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (root / "server.log").read_text()[-2000:]
            pg.stop()
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}{log}")

    run(str(bindir / "initdb"), "-D", str(root / "data"), "-U", PG_USER,
        f"--pwfile={root / 'pwfile'}", "--auth-local=trust", "--auth-host=scram-sha-256",
        "-E", "UTF8", "--no-sync")  # fmt: skip
    # A test server: durability off (fsync, synchronous commit) for speed.
    options = (f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
    run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"),
        "-o", options, "-w", "start")  # fmt: skip
    return pg
