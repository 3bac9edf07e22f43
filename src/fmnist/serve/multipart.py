"""An in-memory multipart/form-data parser: uploads never touch the disk.

Starlette's own form parser spools files over 1 MB to temporary files; this one keeps
every part in memory, which the server's upload limits keep small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import FmnistError


class MultipartError(FmnistError):
    """A multipart body that cannot be parsed."""


@dataclass
class Part:
    """One part of a multipart body."""

    name: str  # the form field name
    filename: str | None  # the uploaded file's name, None for plain fields
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


def parse(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into its parts, in order."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError(
            "the multipart/form-data Content-Type has no boundary parameter; let your HTTP "
            "client build the multipart body (e.g. curl -F file=@photo.jpg)."
        )
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    name, value = bytearray(), bytearray()
    ended = False

    def on_header_end() -> None:
        headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        ctype = headers.get(b"content-type")
        parts.append(
            Part(
                name=disposition.get(b"name", b"").decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=ctype.decode("latin-1") if ctype else None,
            )
        )
        headers.clear()

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_header_field": lambda d, s, e: name.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": lambda d, s, e: parts[-1].data.extend(d[s:e]),
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise MultipartError(f"malformed multipart body ({e}).") from None
    if not ended:
        raise MultipartError(
            "malformed multipart body: it ends before its closing boundary (truncated upload?)."
        )
    return parts
