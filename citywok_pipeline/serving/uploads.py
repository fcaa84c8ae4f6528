"""An upload read from a multipart body as it arrives, into memory, within a hard byte limit.

FastAPI's ``UploadFile`` spools a file field to a temporary file (to disk past 1 MiB) and reads
it back in a thread; here python-multipart's push parser is fed the body as it arrives and
only the named field's bytes are kept, so nothing is written to disk, an upload over the
limit is refused at the first byte past it, and a body that is not a form with that field
gets 400 naming what is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass

from fastapi import HTTPException
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

__all__ = ["DEFAULT_FILENAME", "MAX_FILENAME", "Upload", "read_upload", "upload_openapi"]

DEFAULT_FILENAME = "upload"
# Longest file name kept for answers and errors (a client can send anything).
MAX_FILENAME = 255


@dataclass(frozen=True)
class Upload:
    """The file a client sent: the name it gave (for answers and errors only, never a path)
    and its bytes."""

    filename: str
    data: bytes


class _Collector:
    """python-multipart callbacks keeping the first part named ``field``."""

    def __init__(self, field: bytes, limit: int) -> None:
        self.field = field
        self.limit = limit
        self.data = bytearray()
        self.filename: str | None = None
        self.found = False
        self.too_large = False
        self._keep = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._keep = not self.found and options.get(b"name") == self.field
        if self._keep:
            self.found = True
            raw = options.get(b"filename")
            # As a file name from disk: undecodable bytes kept as surrogate escapes.
            name = raw.decode("utf-8", "surrogateescape") if raw else ""
            self.filename = name[:MAX_FILENAME] or DEFAULT_FILENAME

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keep or self.too_large:
            return
        if len(self.data) + (end - start) > self.limit:
            self.too_large = True
            return
        self.data += data[start:end]

    def on_part_end(self) -> None:
        self._keep = False


async def read_upload(
    content_type: str | None, body: AsyncIterable[bytes], *, limit: int, field: str = "file"
) -> Upload:
    """The file in form field ``field`` of a ``multipart/form-data`` body.

    Parameters
    ----------
    content_type : str or None
        The request's Content-Type header (it carries the boundary).
    body : async iterable of bytes
        The body as it arrives (``request.stream()``).
    limit : int
        Largest file accepted, in bytes.
    field : str
        The form field holding the file.

    Raises
    ------
    HTTPException
        400 when the body is not a multipart form, is malformed or cut off, has no
        ``field`` or the file is empty; 413 as soon as the file passes ``limit`` bytes (the rest of the body
        is not read).
    """
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise HTTPException(
            400, f"expected a multipart/form-data body with the clip in the field {field!r} "
            f"(got {got})",
        )  # fmt: skip
    collector = _Collector(field.encode(), limit)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in body:
            parser.write(chunk)
            if collector.too_large:
                name = collector.filename or DEFAULT_FILENAME
                raise HTTPException(413, f"{name}: upload too large, the limit is {limit} bytes")
        parser.finalize()
    except MultipartParseError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    except ClientDisconnect:  # answered to no one, but logged as what it was, not a 500
        raise HTTPException(
            400, "the upload was cut off: the client closed the connection"
        ) from None
    if not collector.found:
        raise HTTPException(400, f"no field {field!r} in the form: send the clip as {field!r}")
    name = collector.filename or DEFAULT_FILENAME
    if not collector.data:
        raise HTTPException(400, f"{name}: the upload is empty")
    return Upload(name, bytes(collector.data))


def upload_openapi(field: str = "file", description: str = "") -> dict[str, object]:
    """The OpenAPI request body of a route reading an upload with `read_upload` (so that
    ``/docs`` offers a file picker, as for FastAPI's ``UploadFile``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {
                            field: {
                                "type": "string",
                                "format": "binary",
                                "description": description,
                            }
                        },
                    }
                }
            },
        }
    }
