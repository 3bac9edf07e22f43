"""Make docs/photo_pipeline.png: real photos -> the 28x28 inputs the model sees -> prediction.

    python docs/photo_pipeline.py RUN_DIR [--out docs/photo_pipeline.png]

The photos are CC0-1.0 (alexeygrigorev/clothing-dataset-small, see
/work/shared/realphotos/SOURCES.tsv). The last row is a failure kept on purpose: a pair of
boots, where the dataset shows one shoe in profile.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image, ImageOps

from fmnist.images import to_model_input
from fmnist.plots import save
from fmnist.predict import Classifier

PHOTOS = Path("/work/shared/realphotos")
EXAMPLES = [  # (file, true class), all CC0-1.0
    ("1_trouser/alexeygrigorev__clothing-dataset-small__046d0a65-f5a6-47f6-afaf-e692bfcfcb00.jpg",
     "Trouser"),
    ("4_coat/alexeygrigorev__clothing-dataset-small__0a86d893-93f1-4a52-8c42-07bb9f439833.jpg",
     "Coat"),
    ("9_ankle_boot/alexeygrigorev__clothing-dataset-small__b2d00753-c0bd-48f9-95f2-18a91ea62206.jpg",
     "Ankle boot"),
]  # fmt: skip


def pipeline_figure(clf: Classifier, examples: list[tuple[Path, str]]) -> Figure:
    """One row per photo: the photo, the model's 28x28 input, the ten probabilities."""
    fig = Figure(figsize=(9, 2.6 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), 3, width_ratios=[1, 1, 1.6], squeeze=False)
    for row, (path, truth) in zip(axes, examples, strict=True):
        x = to_model_input(path)
        probs = clf.predict_inputs(x[None]).probabilities[0]
        row[0].imshow(ImageOps.exif_transpose(Image.open(path)))
        row[0].set_title(f"photo (true: {truth})", fontsize=10)
        row[1].imshow(x, cmap="gray", vmin=0, vmax=255)
        row[1].set_title("model input, 28x28", fontsize=10)
        for ax in row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
        pred = int(probs.argmax())
        colours = ["tab:green" if clf.classes[pred] == truth else "tab:red"] * len(probs)
        colours = [c if i == pred else "tab:gray" for i, c in enumerate(colours)]
        row[2].barh(range(len(probs)), probs, color=colours)
        row[2].set_yticks(range(len(probs)), clf.classes, fontsize=8)
        row[2].invert_yaxis()
        row[2].set_xlim(0, 1)
        row[2].set_title(f"predicted: {clf.classes[pred]} ({probs[pred]:.0%})", fontsize=10)
    return fig


def main() -> None:
    """Write the figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run directory, model.safetensors or model.onnx")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".png")))
    args = ap.parse_args()
    clf = Classifier.load(args.model)
    print(save(pipeline_figure(clf, [(PHOTOS / f, t) for f, t in EXAMPLES]), args.out))


if __name__ == "__main__":
    main()
