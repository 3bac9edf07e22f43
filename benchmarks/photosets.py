"""The labelled real-photo sets beside the project, read from their SOURCES.tsv.

Two sets: ``shared/realphotos`` (32 photos, column ``class_index``) and
``shared/photos-dev`` (314 phone photos, column ``allowed_fmnist_classes``: the classes an
answer may be, ``none`` for kinds Fashion-MNIST has no class for, whose right answer is
"unsure"). They are for measuring and choosing only: never train weights on them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = {"realphotos": SHARED / "realphotos", "photos-dev": SHARED / "photos-dev"}


@dataclass(frozen=True)
class Photo:
    """One labelled photo: its file, its folder (kind) and the answers that count as right."""

    path: Path
    folder: str
    allowed: frozenset[int]  # empty: no Fashion-MNIST class fits; "unsure" is right


def load_set(root: Path) -> list[Photo]:
    """The photos listed in ``root/SOURCES.tsv``, in its order."""
    with open(root / "SOURCES.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    photos = []
    for row in rows:
        allowed = row.get("allowed_fmnist_classes", row.get("class_index", ""))
        classes = frozenset(int(c) for c in allowed.split(",") if c.strip().isdigit())
        rel = Path(row["path"])
        photos.append(Photo(root / rel, rel.parts[0], classes))
    return photos


def score(predicted: list[int | None], unsure: list[bool], photos: list[Photo]) -> dict:
    """Per folder and in all: right answers among in-class photos, unsure among the rest.

    ``predicted[i]`` is the class answered for photo i (None: no garment found).
    """
    folders: dict[str, list[int]] = {}
    for p, c, u in zip(photos, predicted, unsure, strict=True):
        right = (c in p.allowed) if p.allowed else u
        counts = folders.setdefault(p.folder, [0, 0])
        counts[0] += int(right)
        counts[1] += 1
    inclass = [(c in p.allowed, u) for p, c, u in zip(photos, predicted, unsure, strict=True)
               if p.allowed]  # fmt: skip
    answered = [r for r, u in inclass if not u]
    outside = [u for p, u in zip(photos, unsure, strict=True) if not p.allowed]
    return {
        "folders": folders,
        "in_class_right": sum(r for r, _ in inclass),
        "in_class": len(inclass),
        "coverage": len(answered) / max(1, len(inclass)),
        "answered_accuracy": sum(answered) / max(1, len(answered)),
        "outside_unsure": sum(outside) / max(1, len(outside)) if outside else None,
    }
