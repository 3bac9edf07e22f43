"""The HTTP API and its page: FastAPI app factory. Runs with ONNX Runtime, without torch.

    POST /predict        one image: multipart field ``file``, or the raw image as the body
    POST /predict/batch  several images: multipart field ``files``
    GET  /health, /metadata, / (the page), /docs (OpenAPI)

Every bad request gets a 4xx JSON body ``{"error": CODE, "detail": MESSAGE}``. Uploads are
read into memory under a size limit and never written to disk (:mod:`.uploads`). The
handlers are plain functions that find the model and the limits in ``app.state.service``.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from importlib.resources import files
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import ImageError
from ..images import SIZE, Limits, to_png
from ..predict import Classifier
from .uploads import DEFAULT_SERVE_LIMITS, ApiError, ServeLimits, image_status, read_uploads

__all__ = ["DEFAULT_SERVE_LIMITS", "ApiError", "ServeLimits", "create_app"]

PREDICT_DOC = {  # OpenAPI request body of /predict: a multipart field or a raw image
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
BATCH_DOC = {  # OpenAPI request body of /predict/batch: one or more multipart fields
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": ["files"],
                }
            }
        },
    }
}


@dataclass(frozen=True)
class Service:
    """What the handlers serve with: the model, the request limits and the page."""

    clf: Classifier
    limits: ServeLimits
    image_limits: Limits  # the per-image part of ``limits``, for fmnist.images
    page: str  # the HTML of /


def _service(request: Request) -> Service:
    return request.app.state.service


# ---------------------------------------------------------------- responses


def _png_data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(image)).decode("ascii")


def classify(svc: Service, items: list[tuple[str, bytes]], top_k: int) -> list[dict[str, Any]]:
    """Preprocess and predict uploads in one thread-pool call; a bad file gets an error."""
    names = [name for name, _ in items]
    pred, outcomes = svc.clf.predict_each([data for _, data in items], names, svc.image_limits)
    records = pred.records(top_k)
    out: list[dict[str, Any]] = []
    for name, row in zip(names, outcomes, strict=True):
        if isinstance(row, ImageError):
            out.append({"filename": name, "error": row.code, "detail": str(row)})
            continue
        out.append(
            {
                "filename": name,
                **records[row],
                "probabilities": [float(p) for p in pred.probabilities[row]],
                "model": svc.clf.model_name,
                "image": _png_data_url(pred.images[row]),
            }
        )
    return out


def check_top_k(svc: Service, top_k: int) -> None:
    """Refuse a top_k outside [1, number of classes] with 422."""
    if not 1 <= top_k <= len(svc.clf.classes):
        raise ApiError(
            422, "bad_top_k", f"top_k must be in [1, {len(svc.clf.classes)}], got {top_k}."
        )


async def bounded(coro: Awaitable[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Run ``coro`` under the request timeout; 408 when it takes too long."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise ApiError(
            408,
            "timeout",
            f"the request took longer than the limit of {timeout:g} s; send a smaller image "
            "or retry.",
        ) from None


async def api_error(_request: Request, e: ApiError) -> JSONResponse:
    """An ApiError as its JSON body and status."""
    return JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status)


async def bad_parameter(_request: Request, e: RequestValidationError) -> JSONResponse:
    """A query parameter FastAPI cannot parse, as a 422 naming it and the value sent."""
    detail = "; ".join(
        f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})"
        for err in e.errors()
    )
    return JSONResponse({"error": "bad_parameter", "detail": detail}, status_code=422)


# ---------------------------------------------------------------- handlers


async def predict(request: Request, top_k: int = 3) -> JSONResponse:
    """Class, probabilities and the 28x28 model input for one image."""
    svc = _service(request)
    check_top_k(svc, top_k)

    async def work() -> dict[str, Any]:
        items = await read_uploads(request, "file", 1, svc.limits)
        (r,) = await run_in_threadpool(classify, svc, items, top_k)
        if "error" in r:
            raise ApiError(image_status(r["error"]), r["error"], r["detail"])
        return r

    return JSONResponse(await bounded(work(), svc.limits.timeout))


async def predict_batch(request: Request, top_k: int = 3) -> JSONResponse:
    """One result per uploaded file, in order; a bad file gets an error entry."""
    svc = _service(request)
    check_top_k(svc, top_k)

    async def work() -> dict[str, Any]:
        items = await read_uploads(request, "files", svc.limits.max_files, svc.limits)
        results = await run_in_threadpool(classify, svc, items, top_k)
        failed = sum("error" in r for r in results)
        return {
            "model": svc.clf.model_name,
            "count": len(results),
            "failed": failed,
            "results": results,
        }

    return JSONResponse(await bounded(work(), svc.limits.timeout))


def health(request: Request) -> dict[str, str]:
    """Whether the server is up, and which model it serves."""
    clf = _service(request).clf
    return {"status": "ok", "model": clf.model_name, "backend": clf.backend}


def metadata(request: Request) -> dict[str, Any]:
    """Classes, model, input size, version and limits."""
    svc = _service(request)
    return {
        "model": svc.clf.model_name,
        "backend": svc.clf.backend,
        "classes": list(svc.clf.classes),
        "tta": svc.clf.tta,
        "input": {
            "width": SIZE,
            "height": SIZE,
            "channels": 1,
            "format": "uint8 grey, garment light on black",
        },
        "version": __version__,
        "limits": asdict(svc.limits),
    }


def index(request: Request) -> str:
    """The page: upload a photo or draw a garment."""
    return _service(request).page


# ---------------------------------------------------------------- the app


def create_app(
    model: str | os.PathLike | Classifier | None, limits: ServeLimits = DEFAULT_SERVE_LIMITS
) -> FastAPI:
    """The FastAPI app serving ``model`` (a Classifier, an .onnx file, a run directory or a
    bundled model's name; None: the bundled photo model, through its ONNX export)."""
    if model is None:
        from ..bundled import path
        from ..rundir import ONNX

        model = path() / ONNX
    clf = model if isinstance(model, Classifier) else Classifier.load(model, threads=1)
    app = FastAPI(
        title="fmnist",
        version=__version__,
        description=(
            f"Fashion-MNIST classifier ({clf.model_name}, {clf.backend}). Send a photo or a "
            "drawing of a garment; get its class, the ten probabilities and the 28x28 image "
            f"the model saw. Limits: {limits.max_upload_bytes:,d} bytes and "
            f"{limits.max_pixels:,d} pixels per image, {limits.max_files} images and "
            f"{limits.max_batch_bytes:,d} bytes per batch, {limits.timeout:g} s per request."
        ),
    )
    app.state.service = Service(
        clf=clf,
        limits=limits,
        image_limits=Limits(max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels),
        page=files("fmnist.serve").joinpath("static/index.html").read_text(encoding="utf-8"),
    )
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_parameter)  # type: ignore[arg-type]
    route = app.add_api_route
    route("/predict", predict, methods=["POST"], summary="Classify one image",
          openapi_extra=PREDICT_DOC)  # fmt: skip
    route("/predict/batch", predict_batch, methods=["POST"], summary="Classify several images",
          openapi_extra=BATCH_DOC)  # fmt: skip
    route("/health", health, methods=["GET"], summary="Liveness")
    route("/metadata", metadata, methods=["GET"], summary="The model and the API's limits")
    route("/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    return app
