"""HTTP serving: ``create_app(model)`` builds the FastAPI app, ``run`` serves it.

``run`` picks the backend (:mod:`.backend`: ONNX Runtime whenever it can), one worker per
core (gunicorn with uvicorn workers; uvicorn alone for one), and the metrics directory
the workers share (:mod:`.metrics`). Needs only the ``serve`` extra (ONNX Runtime, FastAPI,
uvicorn, prometheus-client), not torch, when the model is an exported .onnx file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from ..errors import ConfigError
from .app import create_app
from .backend import Served, choose, default_workers
from .metrics import multiprocess_dir, worker_exited
from .uploads import DEFAULT_SERVE_LIMITS, ApiError, ServeLimits

__all__ = [
    "DEFAULT_SERVE_LIMITS",
    "ApiError",
    "ServeLimits",
    "Served",
    "choose",
    "create_app",
    "default_workers",
    "run",
]
log = logging.getLogger("fmnist.serve")


def run(
    model: str | os.PathLike | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits = DEFAULT_SERVE_LIMITS,
    workers: int | None = None,
    backend: str = "auto",
    data_dir: str | None = None,
    metrics: bool = True,
    rule: Mapping[str, Any] | None = None,
) -> None:
    """Serve ``model`` (see :func:`.backend.choose`) on host:port until interrupted.

    ``workers`` None: one per core (:func:`.backend.default_workers`). One worker: uvicorn
    in this process. Several: gunicorn runs that many uvicorn worker processes, each with
    its own copy of the model (a Python process runs one request's Python code at a time)
    and, with ``reuse_port``, its own listening socket. Linux then spreads new connections
    over the workers by their address hash. With one shared socket, the first worker to
    wake takes every connection that is waiting, and keep-alive clients stay with it
    (measured: one worker's throughput out of two). SIGTERM stops taking connections and
    finishes the requests in flight before the server exits. ``metrics`` False: no
    Prometheus counters and no /metrics (what they cost is then measurable). ``rule``:
    ``min_confidence``, ``photo_offsets``, ``photo_shifts`` as Classifier.load takes them,
    in place of the model's own where not None (`fmnist serve --no-photo-shifts`, ...).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    given = {k: v for k, v in (rule or {}).items() if v is not None}
    served = dataclasses.replace(choose(model, backend, data_dir), **given)
    log.info("fmnist serve: %s", served.reason)
    workers = workers or default_workers()
    # Every worker's metrics in one folder, removed at the end; none without metrics.
    with multiprocess_dir() if metrics else contextlib.nullcontext() as metrics_dir:
        if metrics_dir is not None:
            log.info("fmnist serve: metrics of all workers in %s", metrics_dir)
        app = create_app(served.load(), limits, metrics)  # a bad file fails here, once
        _check_port_free(host, port)
        if workers == 1:
            _uvicorn(app, host, port)
            return
        del app  # each worker loads its own copy after the fork
        _gunicorn(served, host, port, limits, workers, metrics)


def _uvicorn(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn in this process; SIGTERM ends it gracefully, status 0."""
    import uvicorn

    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again
    # for the handler it found: a no-op one lets run() return and clean up, not die.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _gunicorn(
    served: Served, host: str, port: int, limits: ServeLimits, workers: int, metrics: bool
) -> None:
    """Run ``workers`` uvicorn workers under gunicorn, each with its own listening socket."""
    try:
        import uvicorn_worker  # noqa: F401 (gunicorn imports it by name)
        from gunicorn.app.base import BaseApplication
    except ImportError as e:
        raise ConfigError(
            f"--workers {workers} needs gunicorn and uvicorn-worker ({e.name} is missing): "
            'install them with `pip install "fmnist[serve]"` (Linux and macOS; gunicorn does '
            "not run on Windows), or serve with --workers 1."
        ) from None

    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": address,
                "workers": workers,
                "worker_class": "uvicorn_worker.UvicornWorker",
                "reuse_port": True,
                "control_socket_disable": True,  # no gunicornc socket in $HOME
                "loglevel": "info",
                "accesslog": "-",  # one line per request on stdout, as uvicorn alone prints
                # SIGTERM: workers finish what is in flight (each request is bounded by
                # the request time limit) before they are killed.
                "graceful_timeout": math.ceil(limits.timeout) + 5,
                "child_exit": lambda _arbiter, worker: worker_exited(worker.pid),
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> FastAPI:
            return create_app(served.load(), limits, metrics)

    print(f"fmnist serve: http://{address} with {workers} workers (Ctrl-C stops)", flush=True)
    Gunicorn().run()


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another server listens on (SO_REUSEPORT would silently share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            fix = "Stop the program that uses the port or choose another with --port"
            if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
                fix = "Give an address of this machine with --host (127.0.0.1, or 0.0.0.0 for all)"
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}. {fix}.") from e
