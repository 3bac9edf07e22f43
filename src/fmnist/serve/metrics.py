"""Prometheus metrics of the server, summed over its worker processes, at ``GET /metrics``.

    fmnist_http_requests_total{endpoint, status}       requests answered
    fmnist_http_request_duration_seconds{endpoint}     latency histogram (receipt to last byte)
    fmnist_images_classified_total                     images that got a prediction
    fmnist_predictions_total{label}                    predictions by class
    fmnist_unsure_total                                predictions marked unsure
    fmnist_rejected_uploads_total{reason}              refused uploads by error code / limit

`fmnist serve` runs prometheus-client in multiprocess mode: :func:`multiprocess_dir` makes
the temporary ``PROMETHEUS_MULTIPROC_DIR`` that every worker writes its values to, and
removes it when the server stops; ``/metrics`` in any worker reads them all. An app made
without it (tests, an embedding program) counts in its own process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets in seconds: one image takes about 1-20 ms, the request limit is 10 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _prometheus() -> Any:
    """The prometheus_client module, or a clear error naming the install command."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            'fmnist serve needs prometheus-client for /metrics: pip install "fmnist[serve]".'
        ) from None
    return prometheus_client


def _reset_value_class() -> None:
    """Make metrics created from now on follow the current PROMETHEUS_MULTIPROC_DIR.

    prometheus-client picks its value class when first imported; the server sets the
    directory later, so the choice is made again here.
    """
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[Path]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for one server and its workers, removed afterwards."""
    _prometheus()
    path = Path(tempfile.mkdtemp(prefix="fmnist-metrics-"))
    before = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    _reset_value_class()
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        _reset_value_class()
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's child_exit hook); its counters stay."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class Metrics:
    """The server's counters and histogram, in a registry of their own (one per app)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # False: no counters, nothing counted (fmnist serve --no-metrics)
        if not enabled:
            return  # nor prometheus-client needed
        prom = _prometheus()
        self.registry = prom.CollectorRegistry()
        reg = {"registry": self.registry}
        self.requests = prom.Counter(
            "fmnist_http_requests", "HTTP requests answered", ["endpoint", "status"], **reg
        )
        self.latency = prom.Histogram(
            "fmnist_http_request_duration_seconds",
            "Time from a request's arrival to its last response byte",
            ["endpoint"],
            buckets=BUCKETS,
            **reg,
        )
        self.images = prom.Counter("fmnist_images_classified", "Images classified", **reg)
        self.predictions = prom.Counter(
            "fmnist_predictions", "Predictions by class", ["label"], **reg
        )
        self.unsure = prom.Counter("fmnist_unsure", "Predictions below the unsure threshold", **reg)
        self.rejected = prom.Counter(
            "fmnist_rejected_uploads", "Uploads refused, by error code or limit", ["reason"], **reg
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_predictions(self, labels: Iterable[str], unsure: Iterable[bool]) -> None:
        """Count classified images by label, and the unsure ones."""
        if not self.enabled:
            return
        n = sure = 0
        for label, u in zip(labels, unsure, strict=True):
            self.predictions.labels(label).inc()
            n += 1
            sure += not u
        if n:
            self.images.inc(n)
        if n - sure:
            self.unsure.inc(n - sure)

    def observe_rejected(self, reason: str) -> None:
        """Count one refused upload or request by its error code."""
        if self.enabled:
            self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition: every worker's values when in multiprocess mode."""
        prom = _prometheus()
        if os.environ.get(ENV):
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return prom.generate_latest(registry)
        return prom.generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request by endpoint and status, with latency."""

    def __init__(self, app: Any, metrics: Metrics, endpoints: Iterable[str]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, frozenset(endpoints)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on; count it when the response is done (500 if none was sent)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope["path"]
            endpoint = path if path in self.endpoints else "other"  # bounded label values
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)
