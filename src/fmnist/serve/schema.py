"""The API's OpenAPI description: request bodies and the shape of every response.

The handlers build their JSON by hand (no validation on the hot path); these models only
document it, so that clients and schemathesis (tests/integration/test_serve_schema.py) can
check every answer against the schema, errors included.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every refusal: a short code and a message with what was expected and the fix."""

    error: str = Field(description="a short code, e.g. not_an_image, too_large, timeout")
    detail: str = Field(description="what was expected, what was found, how to fix it")


class TopK(BaseModel):
    """One of the most probable classes."""

    label: str
    probability: float


class PredictionBody(BaseModel):
    """One classified image."""

    filename: str
    label: str
    class_index: int
    probability: float = Field(description="the top class's probability")
    unsure: bool = Field(description="true when probability is below the unsure threshold")
    top_k: list[TopK]
    probabilities: list[float] = Field(description="all classes, in the order of /metadata")
    model: str
    image: str = Field(description="the 28x28 image the model saw, as a PNG data URL")


class NoGarmentBody(BaseModel):
    """An image in which no garment could be found: an answer, unsure, with the reason."""

    filename: str
    label: None = Field(description="null: nothing to classify")
    unsure: Literal[True] = Field(description="always true")
    reason: str = Field(description="what was found instead of a garment")
    model: str


class FileErrorBody(BaseModel):
    """A file of a batch that could not be classified."""

    filename: str
    error: str
    detail: str


class BatchBody(BaseModel):
    """The results of /predict/batch, one per file in upload order."""

    model: str
    count: int
    failed: int
    results: list[PredictionBody | NoGarmentBody | FileErrorBody]


class HealthBody(BaseModel):
    """/health: up, and what it serves."""

    status: str
    model: str
    backend: str


class ReadyBody(BaseModel):
    """/readyz when ready: the model has answered its warm-up prediction."""

    status: str
    model: str
    backend: str


ERRORS = {  # the statuses a request can be refused with, all as ErrorBody
    400: "empty body, malformed multipart, several files where one was expected",
    408: "the request took longer than the time limit",
    413: "an upload over the byte or pixel limit",
    415: "not an image, or a Content-Type that is not accepted",
    422: "a bad parameter, a truncated image, a missing field",
}


def responses(ok: Any, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: ``ok`` (a model or a union of models) for 200 and
    ErrorBody for each status."""
    out: dict[int | str, dict[str, Any]] = {200: {"model": ok}}
    for status in statuses:
        out[status] = {"model": ErrorBody, "description": ERRORS.get(status, "refused")}
    return out


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
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
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
