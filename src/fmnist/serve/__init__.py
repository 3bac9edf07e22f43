"""HTTP serving: ``create_app(model)`` builds the FastAPI app, ``run`` serves it with uvicorn.

Needs only the ``serve`` extra (ONNX Runtime, FastAPI, uvicorn), not torch, when the model
is an exported .onnx file.
"""

from __future__ import annotations

import os

from .app import DEFAULT_LIMITS, ApiError, ServeLimits, create_app

__all__ = ["ApiError", "ServeLimits", "create_app", "run"]


def run(
    model: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits = DEFAULT_LIMITS,
) -> None:
    """Serve ``model`` (an .onnx file or a run directory) on host:port until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model, limits), host=host, port=port, log_level="info")
