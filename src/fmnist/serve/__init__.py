"""HTTP serving: ``create_app(model)`` builds the FastAPI app, ``run`` serves it with uvicorn.

Needs only the ``serve`` extra (ONNX Runtime, FastAPI, uvicorn), not torch, when the model
is an exported .onnx file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from fastapi import FastAPI

from .app import DEFAULT_LIMITS, ApiError, ServeLimits, create_app

__all__ = ["ApiError", "ServeLimits", "app_from_env", "create_app", "run"]

ENV = "FMNIST_SERVE"  # what worker processes serve: JSON {"model": PATH, "limits": {...}}


def app_from_env() -> FastAPI:
    """The app that $FMNIST_SERVE describes: the factory every uvicorn worker process calls."""
    spec = json.loads(os.environ[ENV])
    return create_app(spec["model"], ServeLimits(**spec["limits"]))


def run(
    model: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits = DEFAULT_LIMITS,
    workers: int = 1,
) -> None:
    """Serve ``model`` (an .onnx file or a run directory) on host:port until interrupted.

    With ``workers`` > 1, uvicorn runs that many processes on one socket, each with its
    own copy of the model (a Python process handles one request's Python code at a time).
    """
    import uvicorn

    app = create_app(model, limits)  # loads the model: a bad file fails here, once
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    os.environ[ENV] = json.dumps(
        {"model": str(Path(model).resolve()), "limits": dataclasses.asdict(limits)}
    )
    uvicorn.run(
        "fmnist.serve:app_from_env", factory=True, workers=workers, host=host, port=port,
        log_level="info",
    )  # fmt: skip
