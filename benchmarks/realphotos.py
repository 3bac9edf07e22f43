"""Accuracy of a model on real photos of garments, per class and overall.

    python benchmarks/realphotos.py runs/latest [--photos /work/shared/realphotos] [--rendered 2000]

The photos folder holds one subfolder per class named ``<class index>_<name>`` (e.g.
``7_sneaker``). Every photo goes through the same pipeline as ``fmnist predict``
(fmnist.images.to_model_input). The photos are for measuring only: never train on them.

With ``--rendered N`` it also scores the first N test images as they are and rendered as
phone photos would look (fmnist.images.render_photo: upscaled, a dark garment on a light
table, off-centre, tinted, JPEG), both through the same pipeline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fmnist.data import load_data
from fmnist.images import render_photo
from fmnist.predict import Classifier, image_extensions
from fmnist.system import hardware

DEFAULT_PHOTOS = "/work/shared/realphotos"


def labelled_photos(root: Path) -> tuple[list[Path], np.ndarray]:
    """Photo paths and their class indices from the ``<index>_<name>/`` folder names."""
    suffixes = image_extensions()
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        index, _, _ = folder.name.partition("_")
        if not index.isdigit():
            raise ValueError(f"{folder} is not named <class index>_<name>, e.g. 7_sneaker.")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in suffixes:
                paths.append(f)
                labels.append(int(index))
    if not paths:
        raise ValueError(f"No photos in class folders under {root}.")
    return paths, np.array(labels)


def main() -> None:
    """Print per-class and overall accuracy on the photos."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run directory, model.safetensors or model.onnx")
    ap.add_argument("--photos", default=DEFAULT_PHOTOS, help="default: %(default)s")
    ap.add_argument("--rendered", type=int, default=0, help="test images to render as photos")
    args = ap.parse_args()

    clf = Classifier.load(args.model)
    paths, labels = labelled_photos(Path(args.photos))
    result = clf.predict(paths)
    correct = result.class_index == labels
    print(f"model {args.model} ({clf.model_name}, {clf.backend}); photos {args.photos}")
    print(f"hardware: {hardware()}")
    print(f"{'class':12s} {'photos':>6s} {'correct':>7s}  mistaken for")
    for c, name in enumerate(clf.classes):
        mine = labels == c
        if mine.any():
            wrong = ", ".join(result.label[i] for i in np.flatnonzero(mine & ~correct))
            print(f"{name:12s} {mine.sum():6d} {correct[mine].sum():7d}  {wrong}")
    print(f"overall accuracy {correct.mean():.3f} ({correct.sum()}/{len(labels)} photos)")
    if args.rendered:
        _, (x, y) = load_data()
        x, y = x[: args.rendered], y[: args.rendered]
        rng = np.random.default_rng(0)
        photos = [render_photo(im, rng) for im in x]
        original = (clf.predict(x).class_index == y).mean()
        rendered = (clf.predict(photos).class_index == y).mean()
        print(
            f"first {len(y)} test images: accuracy {original:.3f} as they are, "
            f"{rendered:.3f} rendered as photos"
        )


if __name__ == "__main__":
    main()
