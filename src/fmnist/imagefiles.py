"""Image files, folders and globs -> one prediction record per file: the CLI's batch mode."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ImageError
from .formats import PHOTO_SUFFIXES, decoders
from .images import to_png
from .rundir import output_dir

if TYPE_CHECKING:
    from .predict import Classifier


def image_extensions() -> frozenset[str]:
    """File suffixes of the formats fmnist decodes or can name, e.g. '.jpg' (lower case)."""
    from PIL import Image

    known = decoders()  # first: it registers the HEIF opener, whose suffixes Pillow then lists
    found = {ext for ext, fmt in Image.registered_extensions().items() if fmt in known}
    return frozenset(found | PHOTO_SUFFIXES)  # without their decoder: an error, not a skip


def image_files(inputs: Iterable[str | os.PathLike]) -> Iterator[tuple[str, str | None]]:
    """Expand files, folders and globs to (path, error or None), in a stable order.

    A folder gives the image files (by suffix) in it and its subfolders; a glob its matches;
    anything else is taken as a file, so a missing one fails when it is read.
    """
    if isinstance(inputs, str | os.PathLike):  # one path: its letters were taken for paths
        raise TypeError(f"expected a list of files, folders or globs, got the single path "
                        f"{os.fspath(inputs)!r}; pass [{os.fspath(inputs)!r}].")  # fmt: skip
    suffixes = image_extensions()
    for item in map(os.fspath, inputs):  # str: records are JSON, globs need str
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
            if not found:
                yield item, f"no image files ({', '.join(sorted(suffixes)[:6])}, ...) in {item}"
            yield from ((str(f), None) for f in found)
        elif not p.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                yield item, f"no files match the pattern {item!r}"
            yield from ((m, None) for m in matches if Path(m).is_file())
        else:
            yield item, None


def _unique_png(directory: Path, stem: str, taken: set[str]) -> Path:
    """directory/stem.png, or stem-2.png, stem-3.png ... if an earlier input took the name."""
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return directory / name


def no_garment(outcome: object) -> dict[str, Any] | None:
    """The answer for an image in which no garment was found (label None, unsure, the
    reason), or None when ``outcome`` is something else: such an image is no failure."""
    if isinstance(outcome, ImageError) and outcome.code == "no_garment":
        return {"label": None, "unsure": True, "reason": str(outcome)}
    return None


def predict_files(
    classifier: Classifier,
    inputs: Iterable[str | os.PathLike],
    *,
    top_k: int = 3,
    save_preprocessed: str | os.PathLike | None = None,
    chunk: int = 256,
) -> Iterator[dict[str, Any]]:
    """Predict image files, folders and globs; one JSON-ready record per file, in order.

    A record has ``path``, ``label``, ``class_index``, ``probability`` and ``top_k`` (plus
    ``preprocessed``, the saved 28x28 PNG, with ``save_preprocessed``) and ``unsure``; for
    a photo with no garment in it, ``label`` None, ``unsure`` true and the ``reason``; or
    ``path`` and ``error`` for a file that failed; failures never stop the other files.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}.")
    if not 1 <= top_k <= len(classifier.classes):  # before any image is read
        raise ValueError(f"top_k must be in [1, {len(classifier.classes)}], got {top_k}.")
    out_dir = Path(save_preprocessed) if save_preprocessed is not None else None
    if out_dir is not None:
        output_dir(out_dir)
    taken: set[str] = set()
    files = iter(image_files(inputs))
    while batch := list(islice(files, chunk)):
        readable = [path for path, error in batch if error is None]
        result, outcomes = classifier.predict_each(readable)
        records, found = result.records(top_k), iter(outcomes)
        for path, error in batch:
            outcome = next(found) if error is None else error
            if (answer := no_garment(outcome)) is not None:
                yield {"path": path, **answer}
                continue
            if not isinstance(outcome, int):
                yield {"path": path, "error": str(outcome)}
                continue
            record = {"path": path, **records[outcome]}
            if out_dir is not None:
                png = _unique_png(out_dir, Path(path).stem, taken)
                png.write_bytes(to_png(result.images[outcome]))
                record["preprocessed"] = str(png)
            yield record
