"""gunicorn's uvicorn worker with a deadline for request headers, and a cap on connections.

uvicorn closes a keep-alive connection idle for ``timeout_keep_alive`` seconds, but any byte
re-arms nothing and a new connection has no timer at all: a client that opens connections and
sends its headers a byte at a time (or never) holds them open for ever. Here a connection must
deliver a request's headers within ``header_timeout_s`` of opening, or of the end of the
previous answer, else it is closed; the body's own deadline is `Guard`'s (an ASGI app is
only called once the headers are in). Beyond ``max_connections`` connections a worker answers
503 at once (uvicorn's ``limit_concurrency``).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["worker_class"]


class _HeaderDeadline:
    """Mixed into uvicorn's HTTP protocol classes (httptools and h11 alike)."""

    header_timeout_s: float = 10.0
    # Provided by the protocol class this is mixed into.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        # Close only a connection waiting for headers: one whose request is in progress (its
        # body arriving, or being answered) is the ASGI limits' to end.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


def worker_class(*, header_timeout_s: float, max_connections: int) -> type:
    """A gunicorn worker class: uvicorn's, with the header deadline and the connection cap.

    Made per server (the limits are class attributes); gunicorn takes the class itself, and the
    workers forked from the server inherit it.
    """
    from uvicorn_worker import UvicornWorker

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is optional: uvicorn's pure-Python h11 protocol
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]

    protocol = type(
        "CitywokHttpProtocol", (_HeaderDeadline, base), {"header_timeout_s": header_timeout_s}
    )
    kwargs = {**UvicornWorker.CONFIG_KWARGS, "http": protocol, "limit_concurrency": max_connections}
    return type("CitywokWorker", (UvicornWorker,), {"CONFIG_KWARGS": kwargs})
