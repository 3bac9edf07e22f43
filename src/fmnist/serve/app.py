"""The HTTP API and its page: FastAPI app factory. Runs with ONNX Runtime, without torch.

    POST /predict        one image: multipart field ``file``, or the raw image as the body
    POST /predict/batch  several images: multipart field ``files``
    GET  /health, /metadata, / (the page), /docs (OpenAPI)

Every bad request gets a 4xx JSON body ``{"error": CODE, "detail": MESSAGE}``. Uploads are
read into memory under a size limit and never written to disk.
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
from ..images import SIZE, ImageError, Limits, to_model_input, to_png
from ..predict import Classifier
from . import multipart

IMAGE_TYPES = ("image/", "application/octet-stream")  # raw bodies we accept (prefixes)
MULTIPART_OVERHEAD = 16 * 1024  # bytes of boundaries and part headers allowed per file
STATUS = {  # ImageError code -> HTTP status
    "empty": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "truncated": 422,
    "zero_size": 422,
    "no_garment": 422,
}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost."""

    max_upload_bytes: int = 10 * 2**20  # per image file
    max_pixels: int = 25_000_000  # per image, from its header, before decoding
    max_files: int = 32  # images per /predict/batch request
    max_batch_bytes: int = 32 * 2**20  # a whole /predict/batch body
    timeout: float = 10.0  # seconds for reading, decoding and predicting one request


class ApiError(Exception):
    """A request the API refuses: HTTP status, a short code and a message."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _png_data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(image)).decode("ascii")


DEFAULT_LIMITS = ServeLimits()


def create_app(
    model: str | os.PathLike | Classifier, limits: ServeLimits = DEFAULT_LIMITS
) -> FastAPI:
    """The FastAPI app serving ``model`` (a Classifier, an .onnx file or a run directory)."""
    clf = model if isinstance(model, Classifier) else Classifier.load(model, threads=1)
    image_limits = Limits(max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
    page = files("fmnist.serve").joinpath("static/index.html").read_text(encoding="utf-8")
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

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_request: Request, e: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        return JSONResponse({"error": "bad_parameter", "detail": detail}, status_code=422)

    async def read_body(request: Request, max_bytes: int) -> bytes:
        """The request body, refused with 413 as soon as it exceeds ``max_bytes``."""
        too_big = ApiError(
            413,
            "too_large",
            f"the request body exceeds the limit of {max_bytes:,d} bytes; send smaller images "
            f"(at most {limits.max_upload_bytes:,d} bytes each) or fewer per batch.",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_big
        return bytes(body)

    def result(x: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """Predict model inputs (N, 28, 28); one JSON-ready dict per image."""
        pred = clf.predict_inputs(x)
        return [
            {
                "label": pred.label[i],
                "class_index": int(pred.class_index[i]),
                "probability": float(pred.probability[i]),
                "top_k": top,
                "probabilities": [float(p) for p in pred.probabilities[i]],
                "model": clf.model_name,
                "image": _png_data_url(x[i]),
            }
            for i, top in enumerate(pred.top_k(top_k))
        ]

    def check_top_k(top_k: int) -> None:
        if not 1 <= top_k <= len(clf.classes):
            raise ApiError(
                422, "bad_top_k", f"top_k must be in [1, {len(clf.classes)}], got {top_k}."
            )

    async def bounded(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Run ``coro`` under the request timeout; 408 when it takes too long."""
        try:
            return await asyncio.wait_for(coro, limits.timeout)
        except TimeoutError:
            raise ApiError(
                408,
                "timeout",
                f"the request took longer than the limit of {limits.timeout:g} s; send a "
                "smaller image or retry.",
            ) from None

    async def uploads(request: Request, field: str, max_files: int) -> list[tuple[str, bytes]]:
        """(filename, bytes) of the images in a multipart field or the raw body."""
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("multipart/form-data"):
            single = limits.max_upload_bytes + MULTIPART_OVERHEAD
            body = await read_body(request, single if max_files == 1 else limits.max_batch_bytes)
            try:
                parts = multipart.parse(body, request.headers["content-type"])
            except multipart.MultipartError as e:
                raise ApiError(400, "malformed_multipart", str(e)) from None
            found = [(p.filename or field, bytes(p.data)) for p in parts if p.name == field]
            if not found:
                names = sorted({p.name for p in parts})
                raise ApiError(
                    422,
                    "missing_field",
                    f"the multipart body has no field {field!r} (found {names}); send the "
                    f"image as {field}=@photo.jpg.",
                )
            if len(found) > max_files:
                raise ApiError(
                    413 if max_files > 1 else 400,
                    "too_many_files",
                    f"{len(found)} files in field {field!r}, the limit is {max_files}"
                    + ("; use /predict/batch for several images." if max_files == 1 else "."),
                )
            return found
        if max_files == 1 and (not ctype or ctype.startswith(IMAGE_TYPES)):
            return [("the upload", await read_body(request, limits.max_upload_bytes))]
        expected = (
            "multipart/form-data with the field 'file', or a raw image body (image/png, "
            "image/jpeg, ... or application/octet-stream)"
            if max_files == 1
            else "multipart/form-data with one or more fields 'files'"
        )
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {ctype or '(none)'} is not accepted; expected {expected}.",
        )

    multipart_doc = {
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
    batch_doc = {
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

    def classify(items: list[tuple[str, bytes]], top_k: int) -> list[dict[str, Any]]:
        """Preprocess and predict uploads in one thread-pool call; a bad file gets an error."""
        inputs, out = [], []
        for name, data in items:
            try:
                inputs.append(to_model_input(data, image_limits, name))
                out.append({"filename": name})
            except ImageError as e:
                out.append({"filename": name, "error": e.code, "detail": str(e)})
        ok = [r for r in out if "error" not in r]
        if ok:
            for r, pred in zip(ok, result(np.stack(inputs), top_k), strict=True):
                r.update(pred)
        return out

    @app.post("/predict", openapi_extra=multipart_doc, summary="Classify one image")
    async def predict(request: Request, top_k: int = 3) -> JSONResponse:
        """Class, probabilities and the 28x28 model input for one image."""
        check_top_k(top_k)

        async def work() -> dict[str, Any]:
            items = await uploads(request, "file", 1)
            (r,) = await run_in_threadpool(classify, items, top_k)
            if "error" in r:
                raise ApiError(STATUS.get(r["error"], 400), r["error"], r["detail"])
            return r

        return JSONResponse(await bounded(work()))

    @app.post("/predict/batch", openapi_extra=batch_doc, summary="Classify several images")
    async def predict_batch(request: Request, top_k: int = 3) -> JSONResponse:
        """One result per uploaded file, in order; a bad file gets an error entry."""
        check_top_k(top_k)

        async def work() -> dict[str, Any]:
            items = await uploads(request, "files", limits.max_files)
            results = await run_in_threadpool(classify, items, top_k)
            failed = sum("error" in r for r in results)
            return {
                "model": clf.model_name,
                "count": len(results),
                "failed": failed,
                "results": results,
            }

        return JSONResponse(await bounded(work()))

    @app.get("/health", summary="Liveness")
    def health() -> dict[str, str]:
        """Whether the server is up, and which model it serves."""
        return {"status": "ok", "model": clf.model_name, "backend": clf.backend}

    @app.get("/metadata", summary="The model and the API's limits")
    def metadata() -> dict[str, Any]:
        """Classes, model, input size, version and limits."""
        return {
            "model": clf.model_name,
            "backend": clf.backend,
            "classes": list(clf.classes),
            "tta": clf.tta,
            "input": {
                "width": SIZE,
                "height": SIZE,
                "channels": 1,
                "format": "uint8 grey, garment light on black",
            },
            "version": __version__,
            "limits": asdict(limits),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    return app
