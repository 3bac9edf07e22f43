"""Every benchmark script starts: its imports resolve and it prints its usage (--help).

The figures in the README come from these scripts; one that no longer starts (a moved
module, a renamed function) would only be found by the next person who measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
