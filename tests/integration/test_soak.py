"""A real `fmnist serve` (default workers: one per core) soaked on loopback for 30 s: good
images mixed with every kind of bad upload, slow clients, then a SIGTERM in the middle."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx2
import numpy as np
import pytest
from pgserver import free_port

from fmnist.images import to_png
from fmnist.predict import Classifier
from fmnist.serve.soak import Case, Soak, bad_cases, good_cases, tree_rss

pytestmark = pytest.mark.slow  # about 45 s

SECONDS = 30  # of load before the SIGTERM
MAX_UPLOAD = 50_000  # bytes (--max-upload-mb), so that "too large" bodies are cheap to send
TIMEOUT = 3  # seconds per request (--timeout): slow clients must finish within it
RSS_BOUND = 50 * 2**20  # growth of the server's resident memory over the soak


@pytest.fixture(scope="module")
def onnx_model(small_run, tmp_path_factory):
    from fmnist.checkpoint import load_model
    from fmnist.export import to_onnx

    out = tmp_path_factory.mktemp("soak") / "model.onnx"
    out.write_bytes(to_onnx(*load_model(small_run)))
    return out


@pytest.fixture(scope="module")
def good(fashion, onnx_model) -> list[tuple[bytes, str]]:
    """60 test images the model gets right, as PNGs with their labels."""
    _, (x, y) = fashion
    clf = Classifier.load(onnx_model)
    pred = clf.predict(x[:200])
    right = np.flatnonzero(pred.class_index == y[:200])[:60]
    assert len(right) == 60
    return [(to_png(x[i]), clf.classes[y[i]]) for i in right]


def test_soak_no_5xx_no_hang_right_labels_bounded_memory_clean_sigterm(onnx_model, good):
    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", str(onnx_model), "--port", str(port),
           "--max-upload-mb", str(MAX_UPLOAD / 2**20), "--timeout", str(TIMEOUT)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "fmnist serve did not become ready"
                time.sleep(0.2)
        bad = bad_cases(int(MAX_UPLOAD / 2**20 * 2**20))
        good_png = good_cases(good)
        png, label = good[0]
        slow = [
            (Case("slow", png, "image/png", 200, label), TIMEOUT / 3 / len(png)),
            (good_png[1], TIMEOUT / 3 / len(good_png[1].body)),  # multipart, slowly
            (Case("too_slow", png, "image/png", 408), 3 * TIMEOUT / len(png)),
        ]
        soak = Soak(port, good_png + bad, slow, clients=4)
        soak.start()
        time.sleep(3)  # warmed up: allocator pools and caches filled
        rss = [tree_rss(proc.pid)]
        for _ in range(SECONDS - 3):
            time.sleep(1)
            rss.append(tree_rss(proc.pid))
        metrics = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        soak.stop.server.set()
        proc.send_signal(signal.SIGTERM)  # clients still running
        status = proc.wait(TIMEOUT + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    hung = soak.finish(timeout=20)
    t = soak.tally
    assert status == 0, proc.stderr.read().decode()[-3000:]
    assert not hung, f"{len(hung)} clients hung"
    assert t.server_errors == 0 and not t.wrong_status, t.wrong_status
    assert t.wrong_labels == 0 and t.lost == 0
    kinds = {c.kind for c in good_png + bad} | {"slow", "too_slow"}
    assert set(t.as_expected) == kinds, kinds - set(t.as_expected)  # every kind answered
    n_bad = sum(t.sent[c.kind] for c in bad) + t.sent["too_slow"]
    assert t.total > 1000 and n_bad >= 0.10 * t.total, (t.total, n_bad)
    assert max(rss) - rss[0] < RSS_BOUND, [r // 2**20 for r in rss]
    reasons = (
        "not_an_image",
        "truncated",
        "too_large",
        "too_many_pixels",
        "empty",
        "malformed_multipart",
        "missing_field",
        "unsupported_media_type",
        "timeout",
    )
    for reason in reasons:
        assert f'fmnist_rejected_uploads_total{{reason="{reason}"}}' in metrics, reason
    assert 'status="5' not in metrics
