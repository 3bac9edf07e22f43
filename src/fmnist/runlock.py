"""One writer per run directory: `hold()`, an ``flock`` on its ``.lock`` file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import DiskFullError, OutputError, RunDirError
from .rundir import DISK_FULL_FIX, LOCK, STATE, output_dir, require_no_run


@contextlib.contextmanager
def hold(path: str | os.PathLike, created: bool = False, new_run: bool = False) -> Iterator[Path]:
    """Hold the run directory ``path`` (created if need be) for this process alone.

    A second process is refused at once. The lock is the kernel's (``flock``), so it goes
    with its process: a run killed with SIGKILL leaves at most a stale ``.lock`` file, which
    blocks nothing. A full disk meanwhile says how to resume, once an epoch is saved. A
    directory made for the run (here, or by the caller: ``created``) that is still empty at
    the end, say after a config error, is removed: a refused run leaves nothing behind.
    With ``new_run``, a directory that already holds a run or other files is refused (once
    held, so that one being written is refused as in use), and a new run that ends before
    its first epoch is saved (an error, Ctrl-C) takes what it wrote with it (config.json,
    tensorboard/): half a run would block its own command's rerun.
    """
    path = Path(path)
    created = created or not path.exists()
    output_dir(path)  # a file in the way, or a folder that cannot be made: said clearly
    lock = path / LOCK
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # not even an empty file fits
                raise DiskFullError(lock, 0, shutil.disk_usage(path).free, DISK_FULL_FIX) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"{path} is in use: another fmnist process ({holder}) is writing it and "
                f"holds {lock}. Wait for it to end, or give another --out."
            ) from None
        with contextlib.suppress(FileNotFoundError):  # the file we locked is still the lock:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:  # its holder did not remove it
                break
        os.close(fd)
    began = ended = False  # a new run of ours: if it fails unsaved, what it wrote goes
    try:
        if new_run:
            require_no_run(path)
            began = True
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        me = f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n"
        with contextlib.suppress(OSError):  # who holds it: for the message, if there is room
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
        yield path
        ended = True
    except DiskFullError as e:
        if not (path / STATE).is_file():
            raise
        fix = f"free some space, then continue with: fmnist train --resume {path}"
        raise e.with_fix(fix) from None
    except OutputError as e:  # the folder became unwritable (read-only, I/O error) mid-run
        if not (path / STATE).is_file():
            raise
        raise OutputError(
            f"{e} Once {path} can be written again, continue with: fmnist train --resume {path}"
        ) from None
    finally:
        if began and not ended and not (path / STATE).is_file():  # nothing to resume
            _empty(path)
        Path(lock).unlink(missing_ok=True)  # before the lock goes: no one else holds it yet
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                path.rmdir()


def _empty(path: Path) -> None:
    """Remove what a new run wrote in ``path`` (which held nothing else), all but the lock."""
    for entry in path.iterdir():
        with contextlib.suppress(OSError):
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
