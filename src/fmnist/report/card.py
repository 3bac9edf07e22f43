"""Model cards in the Hugging Face convention: YAML front matter, then the card's text.

Every finished run and ensemble gets ``README.md`` beside its weights (written with the
report), and so does every bundled model (tools/bundle.py). The front matter is written
as JSON values, which YAML reads as they are: no YAML library needed to write it.
"""

from __future__ import annotations

import json
import math
from typing import Any

TAGS = ["image-classification", "fashion-mnist", "pytorch", "onnx"]
DATASET = "zalando-datasets/fashion_mnist"


def wilson(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy measured on ``n`` images."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def front_matter(name: str, accuracy: float) -> str:
    """The YAML block the Hub reads: library, tags, dataset, task and the test accuracy."""
    result = {
        "task": {"type": "image-classification"},
        "dataset": {"name": "Fashion-MNIST", "type": DATASET, "split": "test"},
        "metrics": [{"type": "accuracy", "value": round(accuracy, 4)}],
    }
    lines = [
        "library_name: fmnist",
        f"tags: {json.dumps(TAGS)}",
        f"datasets: {json.dumps([DATASET])}",
        "pipeline_tag: image-classification",
        'metrics: ["accuracy"]',
        f"model-index: {json.dumps([{'name': f'fmnist-{name}', 'results': [result]}])}",
    ]
    return "---\n" + "\n".join(lines) + "\n---\n"


def summary(meta: dict, metrics: dict, images: int = 10_000) -> str:
    """What the model is, what it was trained on, and its test accuracy with its interval."""
    acc = metrics["test_accuracy"]
    lo, hi = wilson(acc, images)
    cfg = meta.get("config", {})
    split = ""
    if "train_images" in metrics:
        split = f" ({metrics['train_images']:,} to train, {metrics['val_images']:,} to validate)"
    preset, seed = cfg.get("preset", metrics.get("preset")), cfg.get("seed", metrics.get("seed"))
    recipe = f", preset `{preset}`, seed {seed}" if preset is not None else ""
    args = ", ".join(f"{k} {json.dumps(v)}" for k, v in (meta.get("model_args") or {}).items())
    return (
        f"`{meta['model']}`{f' ({args})' if args else ''} trained on Fashion-MNIST's 60,000 "
        f"training images only{split}"
        f"{recipe}. Test accuracy **{acc:.4f}** on the {images:,} test images (95 % interval "
        f"{lo:.4f}-{hi:.4f}, Wilson)."
    )


def intended_use(photo_accuracy: dict[str, str] | None = None) -> str:
    """The intended use and the limits, with the real-photo scores when they were measured."""
    photos = (
        "Measured on real photos (never trained on): "
        + ", ".join(f"{k} {v}" for k, v in photo_accuracy.items())
        + " in-class photos right."
        if photo_accuracy
        else "Its accuracy on real photos has not been measured (`benchmarks/realphotos.py`)."
    )
    return (
        "## Intended use and limits\n\n"
        "Grey 28x28 garments in the dataset's convention (light on black, centred), and "
        "photos of one garment on a plain or segmentable ground through fmnist's photo "
        "pipeline, where it is right far less often than on the test set. " + photos + " "
        "Not for people, and not for garments outside the ten classes (hats, skirts, "
        "shorts...), which it can at best mark unsure.\n"
    )


def unsure_rule(min_confidence: list[float], classes: list[str]) -> str:
    """The card's sentence on when an answer is marked unsure: each class's threshold."""
    per_class = ", ".join(f"{c} {t}" for c, t in zip(classes, min_confidence, strict=True))
    return (
        "Answers whose top probability is below their class's threshold are marked unsure "
        f"({per_class}; chosen on the validation split and the development photos).\n"
    )


def offsets_rule(offsets: list[float], classes: list[str]) -> str:
    """The card's sentence on the photo offsets: each class's, and what they were fitted on."""
    shown = ", ".join(f"{c} {b:+g}" for c, b in zip(classes, offsets, strict=True) if b)
    return (
        "Photos cut out of a cluttered ground (floors, beds, carpets) get an offset per class "
        f"added to their logits, or to the log of their probabilities averaged over one-pixel "
        f"shifts ({shown or 'all 0'}), fitted on the development photos to "
        "undo how such photos pull the answers (shoes seen from above towards Bag); they "
        "also carry that set's mix of kinds, and the weights never saw those photos. "
        "`fmnist predict --no-photo-offsets` (or `photo_offsets=0`) leaves them out.\n"
    )


def model_card(name: str, meta: dict, metrics: dict, body: str = "", **photo: Any) -> str:
    """The whole card: front matter, summary, intended use, then ``body`` (Markdown)."""
    text = [
        front_matter(name, metrics["test_accuracy"]),
        f"# fmnist model `{name}`\n",
        summary(meta, metrics) + "\n",
        intended_use(photo.get("photo_accuracy")),
    ]
    if photo.get("min_confidence") is not None:
        text.append(unsure_rule(photo["min_confidence"], meta["classes"]))
    if photo.get("photo_offsets") is not None:
        text.append(offsets_rule(photo["photo_offsets"], meta["classes"]))
    if body:
        text.append(body)
    return "\n".join(text)
