"""The HTTP API and its page: FastAPI app factory. Runs with ONNX Runtime, without torch.

    POST /predict        one image: multipart field ``file``, or the raw image as the body
    POST /predict/batch  several images: multipart field ``files``
    GET  /health, /metadata, / (the page), /docs (OpenAPI)
    GET  /livez (the process answers), /readyz (the model has answered its warm-up),
         /metrics (Prometheus text format, all workers: :mod:`.metrics`)

Every bad request gets a 4xx JSON body ``{"error": CODE, "detail": MESSAGE}``. Uploads are
read into memory under a size limit and never written to disk (:mod:`.uploads`). The
handlers are plain functions that find the model and the limits in ``app.state.service``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ImageError
from ..imagefiles import no_garment
from ..images import SIZE, Limits, to_png
from ..predict import Classifier
from . import schema
from .metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from .uploads import DEFAULT_SERVE_LIMITS, ApiError, ServeLimits, image_status, read_uploads

__all__ = ["DEFAULT_SERVE_LIMITS", "ApiError", "ServeLimits", "create_app"]
log = logging.getLogger("fmnist.serve")


@dataclass(frozen=True)
class Service:
    """What the handlers serve with: the model, the request limits and the page."""

    clf: Classifier
    limits: ServeLimits
    image_limits: Limits  # the per-image part of ``limits``, for fmnist.images
    page: str  # the HTML of /
    metrics: Metrics
    state: dict[str, Any]  # "ready": True once warmed up; "problem": why not, if it failed


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
    svc.metrics.observe_predictions(pred.label, pred.unsure)
    for name, row in zip(names, outcomes, strict=True):
        if (answer := no_garment(row)) is not None:  # an answer, not a refusal: unsure
            svc.metrics.observe_predictions(["no_garment"], [True])
            out.append({"filename": name, **answer, "model": svc.clf.model_name})
            continue
        if isinstance(row, ImageError):
            svc.metrics.observe_rejected(row.code)
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


async def api_error(request: Request, e: ApiError) -> JSONResponse:
    """An ApiError as its JSON body and status (a refused upload counted by its code)."""
    if not e.counted:  # an image error was counted where it was found
        _service(request).metrics.observe_rejected(e.code)
    return JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status)


async def bad_parameter(request: Request, e: RequestValidationError) -> JSONResponse:
    """A query parameter FastAPI cannot parse, as a 422 naming it and the value sent."""
    detail = "; ".join(
        f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})"
        for err in e.errors()
    )
    _service(request).metrics.observe_rejected("bad_parameter")
    return JSONResponse({"error": "bad_parameter", "detail": detail}, status_code=422)


async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in the API's error form."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
    detail = f"{request.method} {request.url.path}: {e.detail}. The API is described at /docs."
    return JSONResponse({"error": code, "detail": detail}, e.status_code, headers=e.headers)


# ---------------------------------------------------------------- handlers


async def predict(request: Request, top_k: int = 3) -> JSONResponse:
    """Class, probabilities and the 28x28 model input for one image; for a photo with no
    garment in it, label null, unsure true and the reason."""
    svc = _service(request)
    check_top_k(svc, top_k)

    async def work() -> dict[str, Any]:
        items = await read_uploads(request, "file", 1, svc.limits)
        (r,) = await run_in_threadpool(classify, svc, items, top_k)
        if "error" in r:
            raise ApiError(image_status(r["error"]), r["error"], r["detail"], counted=True)
        return r

    return JSONResponse(await bounded(work(), svc.limits.timeout))


async def predict_batch(request: Request, top_k: int = 3) -> JSONResponse:
    """One result per uploaded file, in order; a bad file gets an error entry, a photo with
    no garment in it an unsure answer with label null."""
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


def livez() -> dict[str, str]:
    """Liveness: the process answers HTTP (it may still be warming up)."""
    return {"status": "alive"}


def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 once the model is loaded and has answered its warm-up, else 503."""
    svc = _service(request)
    if not svc.state.get("ready"):
        why = svc.state.get("problem", "the model has not answered its warm-up prediction yet")
        return JSONResponse(
            {"error": "not_ready", "detail": f"{why}; retry shortly (see the server's log)."},
            status_code=503,
        )
    clf = svc.clf
    return JSONResponse({"status": "ready", "model": clf.model_name, "backend": clf.backend})


def metrics_text(request: Request) -> Response:
    """Prometheus metrics of every worker of this server, in the text format."""
    return Response(_service(request).metrics.render(), media_type=CONTENT_TYPE)


def index(request: Request) -> str:
    """The page: upload a photo or draw a garment."""
    return _service(request).page


def warm_up(svc: Service) -> None:
    """One prediction of a blank 28x28 PNG through the whole path; ready when it answers."""
    try:
        blank = to_png(np.zeros((SIZE, SIZE), np.uint8))
        _, (row,) = svc.clf.predict_each([blank], ["warm-up"], svc.image_limits)
        if isinstance(row, ImageError):
            raise row
        svc.state["ready"] = True
    except Exception as e:  # any failure leaves /readyz at 503 with the reason
        svc.state["problem"] = f"the warm-up prediction failed ({type(e).__name__}: {e})"
        log.exception("fmnist serve: the warm-up prediction failed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the model up before the server takes requests."""
    await run_in_threadpool(warm_up, app.state.service)
    yield


# ---------------------------------------------------------------- the app

RESPONSES_PREDICT = schema.responses(
    schema.PredictionBody | schema.NoGarmentBody, 400, 408, 413, 415, 422
)
RESPONSES_BATCH = schema.responses(schema.BatchBody, 400, 408, 413, 415, 422)


def create_app(
    model: str | os.PathLike | Classifier | None,
    limits: ServeLimits = DEFAULT_SERVE_LIMITS,
    metrics: bool = True,
) -> FastAPI:
    """The FastAPI app serving ``model`` (a Classifier, an .onnx file, a run directory or a
    bundled model's name; None: the bundled model, through ONNX Runtime as `fmnist serve`).
    ``metrics`` False: no Prometheus counters, no /metrics."""
    if model is None:
        from .backend import choose

        model = choose(None).load()
    clf = model if isinstance(model, Classifier) else Classifier.load(model, threads=1)
    app = FastAPI(
        title="fmnist",
        version=__version__,
        lifespan=lifespan,
        description=(
            f"Fashion-MNIST classifier ({clf.model_name}, {clf.backend}). Send a photo or a "
            "drawing of a garment; get its class, the ten probabilities and the 28x28 image "
            f"the model saw. Limits: {limits.max_upload_bytes:,d} bytes and "
            f"{limits.max_pixels:,d} pixels per image, {limits.max_files} images and "
            f"{limits.max_batch_bytes:,d} bytes per batch, {limits.timeout:g} s per request."
        ),
    )
    svc = Service(
        clf=clf,
        limits=limits,
        image_limits=Limits(
            max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels, heif=limits.heif
        ),
        page=files("fmnist.serve").joinpath("static/index.html").read_text(encoding="utf-8"),
        metrics=Metrics(enabled=metrics),
        state={"ready": False},
    )
    app.state.service = svc
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_parameter)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    route = app.add_api_route
    route("/predict", predict, methods=["POST"], summary="Classify one image",
          openapi_extra=schema.PREDICT_DOC, responses=RESPONSES_PREDICT)  # fmt: skip
    route("/predict/batch", predict_batch, methods=["POST"], summary="Classify several images",
          openapi_extra=schema.BATCH_DOC, responses=RESPONSES_BATCH)  # fmt: skip
    route("/health", health, methods=["GET"], summary="Up, and what it serves",
          response_model=schema.HealthBody)  # fmt: skip
    route("/livez", livez, methods=["GET"], summary="Liveness probe")
    ready_docs = {200: {"model": schema.ReadyBody}, 503: {"model": schema.ErrorBody}}
    route("/readyz", readyz, methods=["GET"], summary="Readiness probe", responses=ready_docs)
    if metrics:
        route("/metrics", metrics_text, methods=["GET"], summary="Prometheus metrics",
              response_class=PlainTextResponse)  # fmt: skip
    route("/metadata", metadata, methods=["GET"], summary="The model and the API's limits")
    route("/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    endpoints = [r.path for r in app.routes] + ["/docs", "/openapi.json"]
    if metrics:
        app.add_middleware(MetricsMiddleware, metrics=svc.metrics, endpoints=endpoints)
    return app
