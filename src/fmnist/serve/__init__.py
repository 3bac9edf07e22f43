"""HTTP serving: ``create_app(model)`` builds the FastAPI app, ``run`` serves it (uvicorn).

Needs only the ``serve`` extra (ONNX Runtime, FastAPI, uvicorn), not torch, when the model
is an exported .onnx file.
"""

from __future__ import annotations

import os
import socket

from fastapi import FastAPI

from ..errors import ConfigError
from .app import create_app
from .uploads import DEFAULT_SERVE_LIMITS, ApiError, ServeLimits

__all__ = ["DEFAULT_SERVE_LIMITS", "ApiError", "ServeLimits", "create_app", "run"]


def run(
    model: str | os.PathLike | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits = DEFAULT_SERVE_LIMITS,
    workers: int = 1,
) -> None:
    """Serve ``model`` (an .onnx file or a run directory) on host:port until interrupted.

    One worker: uvicorn in this process. Several: gunicorn runs that many uvicorn worker
    processes, each with its own copy of the model (a Python process runs one request's
    Python code at a time) and, with ``reuse_port``, its own listening socket. Linux then
    spreads new connections over the workers by their address hash. With one shared
    socket, the first worker to wake takes every connection that is waiting, and
    keep-alive clients stay with it (measured: one worker's throughput out of two).
    """
    app = create_app(model, limits)  # loads the model: a bad file fails here, once
    _check_port_free(host, port)
    if workers == 1:
        import uvicorn

        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    del app  # each worker loads its own copy after the fork
    try:
        import uvicorn_worker  # noqa: F401 (gunicorn imports it by name)
        from gunicorn.app.base import BaseApplication
    except ImportError as e:
        raise ConfigError(
            f"--workers {workers} needs gunicorn and uvicorn-worker ({e.name} is missing): "
            'install them with `pip install "fmnist[serve]"` (Linux and macOS; gunicorn does '
            "not run on Windows), or serve with one worker."
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
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> FastAPI:
            return create_app(model, limits)

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
            raise ConfigError(
                f"cannot listen on {host}:{port}: {e.strerror}. Stop the program that uses "
                "the port or choose another with --port."
            ) from e
