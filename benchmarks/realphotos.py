"""Accuracy of a model on real photos: both photo sets, per folder, the confusion between
folders and classes, the unsure rule's coverage, and the segmentation's cost.

    python benchmarks/realphotos.py [MODEL] [--rendered 2000] [--no-segment] [--width W]
                                    [--fill F] [--no-offsets] [--no-shifts]
                                    [--brightness B] [--zoom Z] [--frame F] [--square]
                                    [--shade S]

MODEL is a run directory, a model file or a bundled model's name (default: the preferred
bundled model). Every photo goes through the same pipeline as ``fmnist predict``. The sets
(shared/realphotos, shared/photos-dev; benchmarks/photosets.py) are for measuring and
choosing only: never train on them. With ``--rendered N`` it also scores the first N test
images as they are and rendered as phone photos (fmnist.images.render_photo). A bundled
model's photo offsets were fitted on photos-dev (tools/bundle.py): its figures there are
in-sample, and the out-of-fold figure is in model.json ("photo_offsets_rule");
``--no-offsets`` scores without them; ``--no-shifts`` predicts each photo once, not
averaged over one-pixel shifts. ``--brightness B`` and ``--zoom Z`` score the photos as a
phone might have taken them otherwise: exposed B times as bright (PIL's
ImageEnhance.Brightness), or cropped to the centre Z of each side; ``--frame F`` and
``--square`` as an app might pass them on: in a plain frame F of the width wide, or on a
square canvas with bars, both of shade S (0-255, 255: white).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from photosets import SETS, load_set, score
from PIL import Image, ImageEnhance, ImageOps

from fmnist.data import load_data
from fmnist.errors import ImageError
from fmnist.images import Limits, load_grey, render_photo
from fmnist.predict import Classifier
from fmnist.system import hardware


def taken(path: Path, how: argparse.Namespace) -> Path | bytes:
    """The photo at ``path`` as it is, or taken otherwise (``--brightness``, ``--zoom``,
    ``--frame``, ``--square``: the module's docstring), as PNG bytes."""
    if (how.brightness, how.zoom, how.frame, how.square) == (1.0, 1.0, 0.0, False):
        return path
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = im.size
    dx, dy = round(w * (1 - how.zoom) / 2), round(h * (1 - how.zoom) / 2)
    im = ImageEnhance.Brightness(im.crop((dx, dy, w - dx, h - dy))).enhance(how.brightness)
    shade = (how.shade,) * 3
    if how.frame:
        im = ImageOps.expand(im, border=round(how.frame * im.width), fill=shade)
    if how.square:
        side = max(im.size)
        canvas = Image.new("RGB", (side, side), shade)
        canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        im = canvas
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def report(clf: Classifier, name: str, how: argparse.Namespace) -> None:
    """Print one set's scores per folder, its confusion and its unsure figures."""
    photos = load_set(SETS[name])
    pred, outcomes = clf.predict_each([taken(p.path, how) for p in photos])
    predicted, unsure = [], []
    for o in outcomes:
        if isinstance(o, ImageError) and o.code != "no_garment":
            raise o
        found = not isinstance(o, ImageError)
        predicted.append(int(pred.class_index[o]) if found else None)
        unsure.append(not found or bool(pred.unsure[o]))
    r = score(predicted, [False] * len(photos), photos)
    u = score(predicted, unsure, photos)
    print(f"\n{name}: {r['in_class_right']}/{r['in_class']} in-class photos right "
          f"({r['in_class_right'] / r['in_class']:.3f})")  # fmt: skip
    folders = sorted({p.folder for p in photos})
    print(
        f"{'folder':14s} {'right':>7s}  "
        + " ".join(f"{c.split('/')[0][:7]:>7s}" for c in clf.classes)
        + "  none"
    )
    for f in folders:
        mine = [i for i, p in enumerate(photos) if p.folder == f]
        counts = np.bincount([predicted[i] for i in mine if predicted[i] is not None], minlength=10)
        right = (
            sum(predicted[i] in photos[i].allowed for i in mine) if photos[mine[0]].allowed else "-"
        )
        print(f"{f:14s} {right!s:>3s}/{len(mine):<3d}  " + " ".join(f"{c:7d}" for c in counts)
              + f"  {sum(predicted[i] is None for i in mine):4d}")  # fmt: skip
    outside = "-" if u["outside_unsure"] is None else f"{u['outside_unsure']:.2f}"
    t = clf.min_confidence
    rule = f"{t[0]:g}" if np.all(t == t[0]) else "per class " + "/".join(f"{x:g}" for x in t)
    print(f"unsure rule (min_confidence {rule}): in-class answered "
          f"{u['coverage']:.2f}, of those right {u['answered_accuracy']:.3f}; "
          f"not-a-class photos unsure {outside}")  # fmt: skip


def segment_cost(limits: Limits) -> float:
    """Milliseconds per development photo to decode, segment and convert to grey."""
    photos = load_set(SETS["photos-dev"])[::5]
    start = time.perf_counter()
    for p in photos:
        load_grey(p.path, limits)
    return 1000 * (time.perf_counter() - start) / len(photos)


def main() -> None:
    """Print the photo scores of a model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="default: the bundled model")
    ap.add_argument("--rendered", type=int, default=0, help="test images to render as photos")
    ap.add_argument("--no-segment", action="store_true", help="skip the segmentation step")
    ap.add_argument(
        "--width",
        type=float,
        default=Limits.flat_lay_width,
        help="narrow segmented photos to this fraction of their width (%(default)s)",
    )
    ap.add_argument(
        "--fill",
        type=float,
        default=Limits.flat_lay_fill,
        help="fit segmented photos to this fraction of the canvas's side (%(default)s)",
    )
    ap.add_argument("--no-offsets", action="store_true", help="without the photo offsets")
    ap.add_argument("--no-shifts", action="store_true", help="each photo once, no shifts")
    ap.add_argument("--brightness", type=float, default=1.0, help="expose the photos B x (1)")
    ap.add_argument("--zoom", type=float, default=1.0, help="crop to the centre Z of each side")
    ap.add_argument("--frame", type=float, default=0.0, help="in a frame F of the width wide")
    ap.add_argument("--square", action="store_true", help="on a square canvas, with bars")
    ap.add_argument("--shade", type=int, default=255, help="of the frame and bars (255)")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)  # the figure is per core
    limits = Limits(segment=not args.no_segment, flat_lay_width=args.width, flat_lay_fill=args.fill)
    clf = Classifier.load(
        args.model,
        limits=limits,
        photo_offsets=0 if args.no_offsets else None,
        photo_shifts=False if args.no_shifts else None,
    )
    print(f"model {args.model or 'bundled'} ({clf.model_name}, {clf.backend}); {hardware()}")
    print(f"photo offsets: {clf.photo_offsets.round(2).tolist()}")
    for name in SETS:
        report(clf, name, args)
    print(f"\ndecode + segment + grey: {segment_cost(limits):.1f} ms per photo, one core "
          f"(without segmentation {segment_cost(Limits(segment=False)):.1f} ms)")  # fmt: skip
    if args.rendered:
        _, (x, y) = load_data()
        x, y = x[: args.rendered], y[: args.rendered]
        rng = np.random.default_rng(0)
        photos = [render_photo(im, rng) for im in x]
        original = (clf.predict(x).class_index == y).mean()
        rendered = (clf.predict(photos).class_index == y).mean()
        print(f"first {len(y)} test images: accuracy {original:.3f} as they are, "
              f"{rendered:.3f} rendered as photos")  # fmt: skip


if __name__ == "__main__":
    main()
