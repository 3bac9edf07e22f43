"""The model card's summary line."""

from __future__ import annotations

from fmnist.report.card import summary


def test_the_summary_names_the_model_its_arguments_and_the_test_accuracy():
    meta = {"model": "fast", "model_args": {"widths": [32, 64, 128], "hidden": 192},
            "config": {"preset": "photo", "seed": 0}}  # fmt: skip
    text = summary(meta, {"test_accuracy": 0.9238, "train_images": 54_000, "val_images": 6_000})
    assert text.startswith("`fast` (widths [32, 64, 128], hidden 192) trained on")
    assert "(54,000 to train, 6,000 to validate), preset `photo`, seed 0" in text
    assert "**0.9238**" in text and "0.9184-0.9288" in text
    plain = summary({"model": "seed", "model_args": {}}, {"test_accuracy": 0.91})
    assert plain.startswith("`seed` trained on") and "preset" not in plain
