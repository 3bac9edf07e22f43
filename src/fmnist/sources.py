"""Where the Fashion-MNIST files come from: find, fetch and verify them.

Sources are tried in order: an explicit directory (argument or ``FMNIST_DATA_DIR``), the
user cache (``$XDG_CACHE_HOME/fmnist`` or ``~/.cache/fmnist``), Debian's package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), then a download from
the official mirrors into the cache. Every file is checked against the SHA-256 of its
decompressed bytes and its IDX header before use. NumPy only: no torch here.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .data import FILES, FileSpec, parse_idx
from .errors import DataError

MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FIX_HINT = (
    "Delete the file and run `fmnist data fetch` to get a fresh copy, or install Debian's "
    "package with `apt-get install dataset-fashion-mnist`."
)


def cache_dir() -> Path:
    """Return the user cache directory for the dataset (honours XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fmnist"


def _decompress(raw: bytes) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"gzip data is corrupt or truncated ({e}).") from None
    return raw


def _candidates(directory: Path, name: str) -> list[Path]:
    return [p for p in (directory / f"{name}.gz", directory / name) if p.is_file()]


def read_file(path: Path, spec: FileSpec) -> np.ndarray:
    """Read one dataset file (.gz or raw), verify its SHA-256 and IDX header, return it."""
    try:
        raw = _decompress(Path(path).read_bytes())
        digest = hashlib.sha256(raw).hexdigest()
        if digest != spec.sha256:
            raise DataError(
                f"SHA-256 of the decompressed bytes is {digest}, expected {spec.sha256}."
            )
        return parse_idx(raw, spec.shape).copy()  # copy: own, writable memory
    except DataError as e:
        raise DataError(f"{path}: {e} {FIX_HINT}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}). {FIX_HINT}") from None


def _quarantine(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


def download(
    spec: FileSpec,
    dest_dir: Path,
    mirrors: Iterable[str] = MIRRORS,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool = True,
    opener: Callable[..., object] = urllib.request.urlopen,
) -> Path:
    """Download ``spec`` into ``dest_dir`` atomically, verify it, and return its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{spec.name}.gz"
    errors: list[str] = []
    for mirror in mirrors:
        url = f"{mirror}{spec.name}.gz"
        for attempt in range(1, retries + 1):
            fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", dir=dest_dir)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    _copy_with_progress(resp, out, total, spec.name, progress)
                    out.flush()
                    os.fsync(out.fileno())
                read_file(tmp, spec)  # verify before it may enter the cache
                os.replace(tmp, target)
                return target
            except (OSError, urllib.error.URLError, DataError, ValueError) as e:
                errors.append(f"{url} (attempt {attempt}): {e}")
                if isinstance(e, DataError):
                    break  # a wrong file will not get better by fetching it again
                time.sleep(min(2 ** (attempt - 1), 4) if attempt < retries else 0)
            finally:
                tmp.unlink(missing_ok=True)
    raise DataError(f"Could not download {spec.name}:\n  " + "\n  ".join(errors))


def _copy_with_progress(
    resp: BinaryIO, out: BinaryIO, total: int | None, name: str, progress: bool
) -> None:
    from tqdm import tqdm

    with tqdm(
        total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False
    ) as bar:
        while chunk := resp.read(1 << 16):
            out.write(chunk)
            bar.update(len(chunk))


@dataclass
class Located:
    """Where one dataset file was found and its verified contents."""

    spec: FileSpec
    path: Path
    source: str  # "explicit", "cache", "debian" or "download"
    array: np.ndarray


def locate(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download_ok: bool = True,
    progress: bool = True,
    debian_dir: Path = DEBIAN_DIR,
    mirrors: Iterable[str] = MIRRORS,
) -> Located:
    """Find, verify and load one dataset file from the first source that has it."""
    spec = FILES[name]
    given = "--data-dir (or data_dir=, root=)" if data_dir else "FMNIST_DATA_DIR"
    data_dir = data_dir or os.environ.get("FMNIST_DATA_DIR") or None
    tried: list[str] = []
    if data_dir:
        if not Path(data_dir).is_dir():  # a mistyped path must not pass for the other sources
            found = "is a file" if Path(data_dir).exists() else "does not exist"
            raise DataError(
                f"The data folder {str(data_dir)!r} given by {given} {found}; expected a "
                "folder holding the four Fashion-MNIST files. Fix: correct the path, or "
                "leave it out to use the user cache or Debian's copy."
            )
        # An explicit directory is the user's: report a bad file, never move it.
        for path in _candidates(Path(data_dir), name):
            return Located(spec, path, "explicit", read_file(path, spec))
        tried.append(f"{data_dir} (--data-dir / FMNIST_DATA_DIR): no {name}[.gz]")
    cache = cache_dir()
    for path in _candidates(cache, name):
        try:
            return Located(spec, path, "cache", read_file(path, spec))
        except DataError as e:
            # A bad cached copy is never used: move it aside and fall through.
            aside = _quarantine(path)
            print(f"warning: {e}\n  moved aside to {aside}; trying other sources.", file=sys.stderr)
            tried.append(f"{cache} (user cache): corrupt copy moved aside to {aside}")
    if not tried or "user cache" not in tried[-1]:
        tried.append(f"{cache} (user cache): no {name}[.gz]")
    for path in _candidates(debian_dir, name):
        return Located(spec, path, "debian", read_file(path, spec))
    tried.append(f"{debian_dir} (Debian package dataset-fashion-mnist): no {name}[.gz]")
    if download_ok:
        try:
            path = download(spec, cache, mirrors, progress=progress)
            return Located(spec, path, "download", read_file(path, spec))
        except DataError as e:
            tried.append(str(e))
    else:
        tried.append("download: not attempted (offline)")
    raise DataError(
        f"Fashion-MNIST file {name} not found. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nFix: connect to the internet and run `fmnist data fetch`, or "
        "`apt-get install dataset-fashion-mnist`, or pass --data-dir DIR (or set "
        "FMNIST_DATA_DIR) to a directory holding the four files."
    )


def locate_all(data_dir: str | os.PathLike | None = None, **kwargs: Any) -> dict[str, Located]:
    """Locate and verify all four files; see :func:`locate`."""
    return {name: locate(name, data_dir, **kwargs) for name in FILES}
