"""Inference speed of PyTorch and ONNX Runtime: single-image latency and batch throughput.

    python benchmarks/inference_speed.py RUN_DIR [--onnx RUN_DIR/model.onnx] [--no-photo-shifts]

Single image: the wall-clock time from the encoded file's bytes to the probabilities,
preprocessing included (Classifier.predict, as `fmnist predict` and the server run it: a
picture the pipeline changed is also predicted moved by one pixel each way), on one
thread, as p50/p99 over --repeats calls; for a 28x28 PNG (an image already in the dataset's
convention) and for a photo-like JPEG (a test image rendered at 240-600 px).
Batch: images per second for the 10,000 test images as one uint8 array (the fast path),
on 1 and 2 threads, best and median of --calls calls (keras_peer.py's statistic). Exports
the ONNX file first when it is missing. Run it on an otherwise idle machine: the figures
are wall clock.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fmnist.data import load_data
from fmnist.images import render_photo, to_model_input, to_png
from fmnist.predict import Classifier
from fmnist.system import hardware, versions


def percentiles(times: list[float]) -> str:
    """'p50 0.412 ms, p99 0.655 ms' of durations in seconds."""
    p50, p99 = np.percentile(np.array(times) * 1e3, [50, 99])
    return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"


def single_latency(clf: Classifier, files: list[bytes], repeats: int) -> list[float]:
    """Seconds per image from encoded bytes to probabilities, cycling through ``files``."""
    times = []
    for i in range(repeats + 20):
        data = files[i % len(files)]
        t = time.perf_counter()
        clf.predict(data)  # as `fmnist predict` and the server: photos averaged over shifts
        if i >= 20:  # the first calls warm up caches and thread pools
            times.append(time.perf_counter() - t)
    return times


def throughput(clf: Classifier, x: np.ndarray, calls: int) -> tuple[float, float]:
    """Images per second predicting ``x`` (N, 28, 28) uint8: (best, median) of ``calls``."""
    clf.predict_inputs(x[:1000])
    times = [_timed(clf, x) for _ in range(calls)]
    return len(x) / min(times), len(x) / float(np.median(times))


def _timed(clf: Classifier, x: np.ndarray) -> float:
    t = time.perf_counter()
    clf.predict_inputs(x)
    return time.perf_counter() - t


def main() -> None:
    """Print the latency and throughput table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run directory (PyTorch)")
    ap.add_argument("--onnx", help="exported model (default: RUN_DIR/model.onnx)")
    ap.add_argument("--repeats", type=int, default=2000, help="single-image calls per case")
    ap.add_argument("--calls", type=int, default=10, help="timed calls of the 10,000-image batch")
    ap.add_argument("--no-photo-shifts", action="store_true", help="predict each picture once")
    args = ap.parse_args()
    if args.calls < 1 or args.repeats < 1:
        ap.error(f"--calls and --repeats must be at least 1, got {args.calls} and {args.repeats}")

    onnx_path = Path(args.onnx or Path(args.model) / "model.onnx")
    if not onnx_path.exists():
        from fmnist.export import export

        export(args.model, onnx_path)
    shifts = False if args.no_photo_shifts else None  # None: the model file's setting
    _, (x_test, _) = load_data()
    rng = np.random.default_rng(0)
    pngs = [to_png(im) for im in x_test[:200]]
    jpegs = [render_photo(im, rng) for im in x_test[:200]]
    jpeg_kb = np.mean([len(j) for j in jpegs]) / 1e3

    print(f"hardware: {hardware()}")
    print(", ".join(f"{k} {v}" for k, v in versions().items()))
    print(f"model: {args.model} ({Classifier.load(onnx_path).model_name}); ONNX: {onnx_path}")
    for threads in (1, 2):
        backends = {  # each sets its own threads, only while it predicts
            "PyTorch": Classifier.load(args.model, threads=threads, photo_shifts=shifts),
            "ONNX Runtime": Classifier.load(onnx_path, threads=threads, photo_shifts=shifts),
        }
        for name, clf in backends.items():
            if threads == 1:
                for what, files in (("28x28 PNG", pngs), (f"photo JPEG ~{jpeg_kb:.0f} kB", jpegs)):
                    times = single_latency(clf, files, args.repeats)
                    print(f"{name:12s} 1 thread   single image, {what:20s} {percentiles(times)}")
            best, median = throughput(clf, x_test, args.calls)
            print(f"{name:12s} {threads} thread{'s' if threads > 1 else ' '}  batch of 10,000 "
                  f"test images: {best:,.0f} images/s (best of {args.calls}; median "
                  f"{median:,.0f})")  # fmt: skip
    pre = single_latency_pre_only(pngs, jpegs, args.repeats)
    print(f"preprocessing alone: 28x28 PNG {percentiles(pre[0])}; photo JPEG {percentiles(pre[1])}")


def single_latency_pre_only(
    pngs: list[bytes], jpegs: list[bytes], repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of to_model_input alone, for the PNGs and the JPEGs."""
    out = []
    for files in (pngs, jpegs):
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            to_model_input(files[i % len(files)])
            times.append(time.perf_counter() - t)
        out.append(times)
    return out[0], out[1]


if __name__ == "__main__":
    main()
