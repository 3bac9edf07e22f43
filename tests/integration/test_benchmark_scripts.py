"""Every benchmark script starts: its imports resolve and it prints its usage (--help).

The figures in the README come from these scripts; one that no longer starts (a moved
module, a renamed function) would only be found by the next person who measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PEER_ONLY = {"keras_peer.py"}  # runs in a venv of its own, with Keras (see its docstring)
SCRIPTS = sorted(
    p.name
    for p in BENCHMARKS.glob("*.py")
    if '__name__ == "__main__"' in p.read_text() and p.name not in PEER_ONLY
)


def test_there_are_benchmark_scripts():
    assert {"train_speed.py", "realphotos.py", "precision.py", "serve_load.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_starts_and_prints_its_usage(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_photo_formats_measures_every_format_at_both_sizes(tmp_path, fashion):
    from fmnist.images import render_photo

    _, (x_test, _) = fashion
    for i in range(2):
        (tmp_path / f"{i}.jpg").write_bytes(render_photo(x_test[i], np.random.default_rng(i)))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "photo_formats.py"), str(tmp_path),
                           "--photos", "2", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]  # size (2 words), format, ...
    table = {(r[0], r[2]): float(r[-1]) for r in rows if len(r) == 6 and r[2].isupper()}
    assert set(table) == {(s, f) for s in ("as", "12") for f in ("JPEG", "HEIF", "AVIF")}
    assert all(table[s, "JPEG"] == 0 for s in ("as", "12"))
    assert all(diff < 6 for diff in table.values())  # the same photo, whatever its format
