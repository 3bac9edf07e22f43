"""The peer: the seed notebook's recipe in Keras 3, for side-by-side figures on one machine.

    python -m venv /tmp/keras && /tmp/keras/bin/pip install "tensorflow-cpu==2.21.*" jax
    /tmp/keras/bin/pip install --no-deps -e .      # fmnist.data only: the same files, no torch
    /tmp/keras/bin/python benchmarks/keras_peer.py                       # TensorFlow backend
    KERAS_BACKEND=jax /tmp/keras/bin/python benchmarks/keras_peer.py --epochs 0  # inference

Trains the notebook's CNN (Conv2D(32) > MaxPooling2D > Conv2D(64) > MaxPooling2D > Flatten >
Dense(128) > Dense(10); Adam; sparse categorical cross-entropy; 10 epochs of batch 32 with
validation_split=0.2) and prints the seconds per epoch, the training time and the test
accuracy; then the images per second of ``model.predict`` on the 10,000 test images at
--predict-batch (best of --repeats calls, after a warm-up call that compiles). Compare with
`benchmarks/train_speed.py --presets seed` and `benchmarks/inference_speed.py` run on the
same idle machine, alternating, as the figures are wall clock.
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

from fmnist.data import load_data
from fmnist.system import hardware


def seed_model() -> keras.Model:
    """The notebook's CNN, compiled as the notebook compiles it."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch, validation included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Start the clock."""
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Stop the clock."""
        self.seconds.append(time.perf_counter() - self._t)


def main() -> None:
    """Train and time the peer, then print its figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=10, help="0: inference only (random weights)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--predict-batch", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_data()
    x_train = (x_train.astype("float32") / 255.0)[..., None]  # the notebook's preprocessing
    x_test = (x_test.astype("float32") / 255.0)[..., None]
    model = seed_model()
    backend = keras.backend.backend()
    print(f"hardware: {hardware()}; keras {keras.__version__}, backend {backend}")
    out: dict = {"hardware": hardware(), "keras": keras.__version__, "backend": backend}
    if args.epochs:
        timer = EpochTimer()
        t = time.perf_counter()
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                  validation_split=0.2, callbacks=[timer], verbose=0)  # fmt: skip
        train_s = time.perf_counter() - t
        _, test_acc = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
        per_epoch = " ".join(f"{s:.1f}" for s in timer.seconds)
        print(f"train: {args.epochs} epochs of batch {args.batch_size} in {train_s:.1f} s "
              f"(s/epoch {per_epoch}); test {test_acc:.4f}")  # fmt: skip
        out.update(epoch_seconds=timer.seconds, train_seconds=train_s, test_accuracy=test_acc)
    model.predict(x_test, batch_size=args.predict_batch, verbose=0)  # compile, warm up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.predict(x_test, batch_size=args.predict_batch, verbose=0)
        times.append(time.perf_counter() - t)
    ips = len(x_test) / min(times)
    print(f"predict: {ips:,.0f} images/s (10,000 test images, batch {args.predict_batch}, "
          f"best of {args.repeats}; median {len(x_test) / np.median(times):,.0f})")  # fmt: skip
    out["predict_images_per_second"] = ips
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
