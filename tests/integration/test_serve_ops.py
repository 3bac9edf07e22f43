"""What `fmnist serve` runs with (backend, workers) and how it is operated: probes,
Prometheus metrics summed over workers, and a SIGTERM that lets a slow request finish."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pgserver import free_port
from prometheus_client.parser import text_string_to_metric_families

from fmnist.errors import CheckpointError, ConfigError, ExportError
from fmnist.images import to_png
from fmnist.predict import Classifier
from fmnist.serve import backend as backend_module
from fmnist.serve import choose, create_app, default_workers


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One user cache for the module: the small run is exported once."""
    root = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root))
        yield root / "fmnist" / "onnx"


@pytest.fixture
def run_copy(small_run, tmp_path, cache):
    """A copy of the small run's checkpoint, without a model.onnx."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.safetensors", "model.json"):
        shutil.copy2(small_run / name, out / name)
    return out


def samples(fashion, n: int = 64) -> np.ndarray:
    return fashion[1][0][:n]


# ---------------------------------------------------------------- the backend


def test_a_run_directory_is_served_by_onnx_exported_once_and_cached(
    run_copy, cache, fashion, monkeypatch
):
    served = choose(run_copy)
    assert served.backend == "onnx" and served.path.parent == cache
    assert "no model.onnx beside the weights" in served.reason
    torch_labels = Classifier.load(run_copy).predict(samples(fashion)).label
    assert served.load().predict(samples(fashion)).label == torch_labels
    assert served.load().backend == "onnx"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this checkpoint")

    monkeypatch.setattr("fmnist.export.export", no_export)
    assert choose(run_copy / "model.safetensors").path == served.path


def test_the_runs_own_onnx_is_used_only_when_current(run_copy, cache, fashion):
    cached = choose(run_copy).path
    own = run_copy / "model.onnx"
    shutil.copy2(cached, own)
    assert choose(run_copy).path == own and "checkpoint's own" in choose(run_copy).reason
    later = own.stat().st_mtime + 10
    os.utime(run_copy / "model.safetensors", (later, later))  # weights newer: stale
    served = choose(run_copy)
    assert served.path == cached and "older than the weights" in served.reason


def test_a_bundled_models_own_onnx_is_used_whatever_its_files_times(tmp_path, monkeypatch):
    from fmnist.bundled import path as bundled_path

    shipped = tmp_path / "models_bundled" / "photo"
    shutil.copytree(bundled_path("photo"), shipped)
    os.utime(shipped / "model.onnx", (0, 0))  # as a checkout may leave it: older than all
    monkeypatch.setattr(backend_module, "root", lambda: tmp_path / "models_bundled")
    served = choose(shipped)
    assert served.path == shipped / "model.onnx" and "checkpoint's own" in served.reason
    copied = shutil.copytree(shipped, tmp_path / "runs" / "photo")  # not shipped: by its times
    os.utime(copied / "model.onnx", (0, 0))
    assert "older than the weights" in backend_module.onnx_is_current(
        copied / "model.onnx", copied / "model.safetensors", {}, copied / "model.json"
    )


def test_an_onnx_of_another_model_is_not_used(run_copy, cache, tmp_path):
    from fmnist.bundled import path as bundled_path

    other = choose(bundled_path()).path  # the bundled `fast` model's export
    shutil.copy(other, run_copy / "model.onnx")  # newer than the weights, so only its
    served = choose(run_copy)  # metadata can tell it apart (copy2 kept the old mtime)
    assert served.path != run_copy / "model.onnx"
    assert "exported from another model" in served.reason


def test_the_app_without_a_model_serves_the_bundled_one_through_onnx(cache):
    with TestClient(create_app(None)) as c:
        assert c.get("/health").json() == {"status": "ok", "model": "fast", "backend": "onnx"}
        assert c.get("/readyz").status_code == 200


def test_pytorch_serves_only_with_a_reason_when_export_fails(run_copy, cache, monkeypatch):
    for f in cache.glob("*.onnx"):
        f.unlink()

    def failing_export(*args, **kwargs):
        raise ExportError("ONNX Runtime disagrees with PyTorch (test)")

    monkeypatch.setattr("fmnist.export.export", failing_export)
    served = choose(run_copy)
    assert served.backend == "torch" and served.path == run_copy
    assert "ONNX Runtime disagrees with PyTorch (test)" in served.reason
    assert "`fmnist export` fixes this" in served.reason
    with pytest.raises(ConfigError, match="--backend onnx: no ONNX model could be had"):
        choose(run_copy, "onnx")
    assert choose(run_copy, "torch").backend == "torch"


def test_bad_models_and_backends_are_clear_errors(run_copy, tmp_path):
    with pytest.raises(ConfigError, match="missing.*does not exist. Give a run directory"):
        choose(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--backend torch needs a checkpoint"):
        choose(tmp_path / "model.onnx", "torch")
    with pytest.raises(ConfigError, match="--backend must be one of auto, onnx, torch"):
        choose(run_copy, "gpu")
    weights = (run_copy / "model.safetensors").read_bytes()
    (run_copy / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # truncated
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        choose(run_copy)  # said as it is: no fallback to PyTorch, which could not load it
    (run_copy / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="model.safetensors: .* not a complete checkpoint"):
        choose(run_copy)


def test_default_workers_is_one_per_usable_core(monkeypatch):
    monkeypatch.setattr(backend_module.os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert default_workers() == 3
    from fmnist.cli import build_parser

    assert build_parser().parse_args(["serve"]).workers is None


# ---------------------------------------------------------------- probes and metrics


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in a Prometheus text exposition (0 if none)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.fixture(scope="module")
def clf(small_run) -> Classifier:
    return Classifier.load(small_run)


def test_readyz_is_503_until_the_warm_up_prediction(clf, monkeypatch):
    app = create_app(clf)
    c = TestClient(app)  # no `with`: the lifespan (warm-up) has not run
    assert c.get("/livez").json() == {"status": "alive"}
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["error"] == "not_ready"
    assert "has not answered its warm-up prediction" in r.json()["detail"]
    with c:
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready"
    broken = create_app(clf)
    monkeypatch.setattr(broken.state.service.clf, "predict_each", lambda *a: 1 / 0)
    with TestClient(broken) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "ZeroDivisionError" in r.json()["detail"]
        assert c.get("/livez").status_code == 200


def test_metrics_count_requests_images_classes_unsure_and_rejections(small_run, fashion):
    x = fashion[1][0]
    sure = Classifier.load(small_run, min_confidence=0.0)
    unsure = Classifier.load(small_run, min_confidence=1.0)  # every answer below 100 %
    with TestClient(create_app(sure)) as c:
        label = c.post("/predict", content=to_png(x[0])).json()["label"]
        r = c.post("/predict", content=b"hello", headers={"content-type": "image/png"})
        assert r.status_code == 415
        files = [("files", ("a.png", to_png(x[1]), "image/png")),
                 ("files", ("b", b"", "image/png"))]  # fmt: skip
        assert c.post("/predict/batch", files=files).json()["failed"] == 1
        r = c.get("/nowhere")
        detail = "GET /nowhere: Not Found. The API is described at /docs."
        assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": detail}
        r = c.get("/predict")
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
        assert r.headers["allow"] == "POST"
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "fmnist_http_requests_total", endpoint="/predict", status="200") == 1
    assert metric(text, "fmnist_http_requests_total", endpoint="/predict", status="415") == 1
    assert metric(text, "fmnist_http_requests_total", endpoint="/predict/batch", status="200") == 1
    assert metric(text, "fmnist_http_requests_total", endpoint="other", status="404") == 1
    assert metric(text, "fmnist_http_requests_total", endpoint="/predict", status="405") == 1
    assert metric(text, "fmnist_http_request_duration_seconds_count", endpoint="/predict") == 3
    assert metric(text, "fmnist_images_classified_total") == 2
    assert metric(text, "fmnist_predictions_total", label=label) >= 1
    assert sum(metric(text, "fmnist_predictions_total", label=k) for k in sure.classes) == 2
    assert metric(text, "fmnist_unsure_total") == 0
    assert metric(text, "fmnist_rejected_uploads_total", reason="not_an_image") == 1
    assert metric(text, "fmnist_rejected_uploads_total", reason="empty") == 1
    with TestClient(create_app(unsure)) as c:
        assert c.post("/predict", content=to_png(x[0])).json()["unsure"] is True
        assert c.post("/predict?top_k=0", content=to_png(x[0])).status_code == 422
        wall = to_png(np.full((120, 160), 250, np.uint8))  # no garment: an unsure answer
        assert c.post("/predict", content=wall).json()["label"] is None
        text = c.get("/metrics").text
    assert metric(text, "fmnist_unsure_total") == 2
    assert metric(text, "fmnist_predictions_total", label="no_garment") == 1
    assert metric(text, "fmnist_rejected_uploads_total", reason="bad_top_k") == 1


# ---------------------------------------------------------------- a real server


def start_server(model: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    """`fmnist serve MODEL FLAGS` on a free port, once /readyz answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", str(model), "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # an export on the fly takes a few seconds
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx2.TransportError:
            pass
        assert time.monotonic() < deadline, "fmnist serve did not become ready"
        time.sleep(0.2)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_a_slow_request_finish_and_metrics_sum_over_workers(
    run_copy, fashion, clf, workers
):
    image = fashion[1][0][3]
    body = to_png(image)
    proc, port = start_server(run_copy, "--workers", workers)
    try:
        for _ in range(6):  # new connections: spread over the workers
            assert httpx2.post(f"http://127.0.0.1:{port}/predict", content=body).status_code == 200
        text = httpx2.get(f"http://127.0.0.1:{port}/metrics").text
        assert metric(text, "fmnist_http_requests_total", endpoint="/predict", status="200") == 6
        assert metric(text, "fmnist_images_classified_total") == 6
        slow = socket.create_connection(("127.0.0.1", port), timeout=20)
        head = ("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        slow.sendall(head.encode() + body[:10])
        time.sleep(0.5)  # the request is in flight, its body half sent
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None, "the server exited with a request in flight"
        slow.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            answer += chunk
        slow.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert f'"label":"{clf.predict(image[None]).label[0]}"'.encode() in answer
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = proc.stdout.read().decode()
    found = re.search(r"metrics of all workers in (\S+)", log)
    assert found and "ONNX Runtime on an export of" in log, log
    assert not Path(found[1]).exists(), "the metrics directory was left behind"


def test_an_address_that_is_not_this_machines_says_so():
    from fmnist.serve import _check_port_free

    for host in ("999.1.1.1", "192.0.2.1"):  # no such address; TEST-NET-1, not ours
        with pytest.raises(ConfigError, match=f"cannot listen on {host}:.*Give an address of"):
            _check_port_free(host, free_port())
