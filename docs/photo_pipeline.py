"""Make docs/photo_pipeline.png: real photos -> segmented -> the 28x28 input -> the answer.

    python docs/photo_pipeline.py [MODEL] [--out docs/photo_pipeline.png]

MODEL is a run directory, a model file or a bundled model's name (default: the bundled
model `fmnist predict` uses). The photos are CC0-1.0 (alexeygrigorev/clothing-dataset-small,
see shared/realphotos/SOURCES.tsv and shared/photos-dev/SOURCES.tsv). The two last rows
are the hard kinds, kept on purpose: a long-sleeved top laid flat with its arms spread (the
`photo` model of 4d3e976 calls it Pullover, unsure) and a pair of shoes seen from above, where
the dataset shows one shoe in profile (the `default` model calls it Bag, `photo` Sneaker).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image, ImageOps

from fmnist.images import load_grey
from fmnist.plots import save
from fmnist.predict import Classifier

SHARED = Path(__file__).resolve().parents[2] / "shared"
EXAMPLES = [  # (file, what counts as right), all CC0-1.0
    ("realphotos/4_coat/alexeygrigorev__clothing-dataset-small__0a86d893-93f1-4a52-8c42-07bb9f439833.jpg",
     "Coat"),
    ("photos-dev/shirt/005d3a4d-b8cc-4f14-a288-8065ab797974.jpg", "Shirt"),
    ("photos-dev/dress/009b3c31-fb62-45c0-be9a-37a5c238cb88.jpg", "Dress"),
    ("photos-dev/longsleeve/05a5ad6f-6a04-4d4f-9bd1-16f3c3485ec5.jpg", "T-shirt/top or Pullover"),
    ("photos-dev/shoes/15839171-a64e-4526-a4fa-314a7b2c72fc.jpg", "Sandal, Sneaker or Ankle boot"),
]  # fmt: skip


def pipeline_figure(clf: Classifier, examples: list[tuple[Path, str]]) -> Figure:
    """One row per photo: the photo, the segmented grey image, the 28x28 input, the answer."""
    fig = Figure(figsize=(10, 2.4 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), 4, width_ratios=[1, 1, 1, 1.6], squeeze=False)
    for row, (path, truth) in zip(axes, examples, strict=True):
        grey, _ = load_grey(path)  # oriented, segmented (the ground painted plain), grey
        result = clf.predict([path])  # as `fmnist predict` does: photo offsets included
        x = result.images[0]
        probs = result.probabilities[0]
        row[0].imshow(ImageOps.exif_transpose(Image.open(path)))
        row[0].set_title(f"photo (right: {truth})", fontsize=9)
        row[1].imshow(grey, cmap="gray", vmin=0, vmax=255)
        row[1].set_title("segmented, narrowed", fontsize=9)
        row[2].imshow(x, cmap="gray", vmin=0, vmax=255)
        row[2].set_title("model input, 28x28", fontsize=9)
        for ax in row[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        pred = int(probs.argmax())
        ok = clf.classes[pred] in truth.replace(" or ", ", ").split(", ")
        colours = ["tab:green" if ok else "tab:red"] * len(probs)
        colours = [c if i == pred else "tab:gray" for i, c in enumerate(colours)]
        row[3].barh(range(len(probs)), probs, color=colours)
        row[3].set_yticks(range(len(probs)), clf.classes, fontsize=8)
        row[3].invert_yaxis()
        row[3].set_xlim(0, 1)
        unsure = " - unsure" if result.unsure[0] else ""
        row[3].set_title(f"answer: {clf.classes[pred]} ({probs[pred]:.0%}){unsure}", fontsize=9)
    return fig


def main() -> None:
    """Write the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="run directory, model file or bundled model name")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".png")))
    args = ap.parse_args()
    clf = Classifier.load(args.model)
    print(save(pipeline_figure(clf, [(SHARED / f, t) for f, t in EXAMPLES]), args.out))


if __name__ == "__main__":
    main()
