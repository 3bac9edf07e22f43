"""What a request may send and cost: the limits, reading the body, finding the images in it.

Every refusal is an :class:`ApiError` (HTTP status, short code, message), which the app turns
into a JSON body ``{"error": CODE, "detail": MESSAGE}``. Bodies are read into memory, never
written to disk, and reading stops as soon as a limit is exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from . import multipart

IMAGE_TYPES = ("image/", "application/octet-stream")  # raw bodies we accept (prefixes)
MULTIPART_OVERHEAD = 16 * 1024  # bytes of boundaries and part headers allowed per file
STATUS = {  # ImageError code -> HTTP status; other codes get 400
    "empty": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "truncated": 422,
    "zero_size": 422,
}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost."""

    max_upload_bytes: int = 10 * 2**20  # per image file
    max_pixels: int = 25_000_000  # per image, from its header, before decoding
    max_files: int = 32  # images per /predict/batch request
    max_batch_bytes: int = 32 * 2**20  # a whole /predict/batch body
    timeout: float = 10.0  # seconds for reading, decoding and predicting one request
    heif: bool = False  # HEIC and AVIF uploads: their decoders trust the header (fmnist.formats)


DEFAULT_SERVE_LIMITS = ServeLimits()  # stricter pixels than images.DEFAULT_LIMITS (50 M)


class ApiError(Exception):
    """A request the API refuses: HTTP status, a short code and a message."""

    def __init__(self, status: int, code: str, detail: str, counted: bool = False) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.counted = counted  # already in fmnist_rejected_uploads_total


def image_status(code: str) -> int:
    """The HTTP status for an ImageError code (400 for codes without their own)."""
    return STATUS.get(code, 400)


async def read_body(request: Request, max_bytes: int, limits: ServeLimits) -> bytes:
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


async def read_uploads(
    request: Request, field: str, max_files: int, limits: ServeLimits
) -> list[tuple[str, bytes]]:
    """(filename, bytes) of the images in a multipart field, or of the raw body."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        single = limits.max_upload_bytes + MULTIPART_OVERHEAD
        max_bytes = single if max_files == 1 else limits.max_batch_bytes
        body = await read_body(request, max_bytes, limits)
        return multipart_files(body, request.headers["content-type"], field, max_files)
    if max_files == 1 and (not ctype or ctype.startswith(IMAGE_TYPES)):
        return [("the upload", await read_body(request, limits.max_upload_bytes, limits))]
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


def multipart_files(
    body: bytes, content_type: str, field: str, max_files: int
) -> list[tuple[str, bytes]]:
    """(filename, bytes) of the parts named ``field`` in a multipart body; 4xx otherwise."""
    try:
        parts = multipart.parse(body, content_type)
    except multipart.MultipartError as e:
        raise ApiError(400, "malformed_multipart", str(e)) from None
    ours = [p for p in parts if p.name == field]
    plain = [i for i, p in enumerate(ours) if p.filename is None]
    if plain:  # a form value, not an upload: the request is wrong, not one of its images
        raise ApiError(
            422,
            "not_a_file",
            f"part {plain[0] + 1} of field {field!r} is a plain form value, not a file (its "
            f"Content-Disposition has no filename); send images as {field}=@photo.jpg.",
        )
    found = [(p.filename or field, bytes(p.data)) for p in ours]
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
