"""What a server says about itself: request ids, JSON logs and Prometheus metrics.

`Observe` is a pure ASGI middleware, the outermost one: it gives every request an id (the
client's ``X-Request-ID`` when it is a sane token, else a new one), returns it in the answer's
``X-Request-ID``, keeps it in a context variable that the log filter adds to every record
logged while the request runs, and when the request ends counts it and its latency by route
and status and logs one JSON line for it (``citywok.access``).

Metrics are prometheus-client's. Under gunicorn they are in its multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by `serve` before the workers fork): each worker writes its
own memory-mapped file and ``/metrics`` sums them, whichever worker answers.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import client_of

__all__ = ["REQUEST_ID", "Metrics", "Observe", "RequestIdFilter", "json_log_config"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("citywok_request_id", default="-")
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Latency buckets, seconds: a match is ~10-50 ms, a queue or a slow client much more.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"

access_log = logging.getLogger("citywok.access")


class Metrics:
    """The server's metrics, in a registry of their own (several apps may share a process).

    In multiprocess mode the values live in files and are read back by
    :meth:`exposition`; the registry only names them.
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "citywok_http_requests", "HTTP requests answered.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "citywok_http_request_duration_seconds",
            "Time from a request's headers to the end of its answer.",
            ["route", "method", "status"], buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.matches = Counter(
            "citywok_matches", "POST /match answers, by result: found (one episode), ambiguous "
            "(audio shared by several), not_found.", ["result"], registry=r,
        )  # fmt: skip
        self.version = Gauge(
            "citywok_version_served", "1 for the version a live worker serves.",
            ["version"], multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.episodes = Gauge(
            "citywok_episodes_served", "Episodes in the version served.",
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.swaps = Counter(
            "citywok_version_swaps", "New versions swapped in (summed over workers).", registry=r
        )
        self.refused = Gauge(
            "citywok_shards_refused", "Shards of the version served that are refused (a failed "
            "checksum, a truncated file): the others answer.", multiprocess_mode="livemax",
            registry=r,
        )  # fmt: skip
        self._served: str | None = None

    def served(self, version: str | None, episodes: int, refused: int) -> None:
        """Record what this worker serves now (called at start, after a swap, on a poll)."""
        label = version or "unpublished"
        if label != self._served:
            if self._served is not None:
                self.version.labels(self._served).set(0)
                self.swaps.inc()
            self.version.labels(label).set(1)
            self._served = label
        self.episodes.set(episodes)
        self.refused.set(refused)

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of ``/metrics``: every worker's values in multiprocess
        mode, else this process's."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Observe:
    """Request ids, the access log and the request metrics, as one pure ASGI middleware."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        paths: Callable[[], Iterable[str]] = tuple,
        log_requests: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self._paths = paths
        self._known: frozenset[str] | None = None

    def _route(self, scope: Scope) -> str:
        """The route's path template; for a request answered before routing (refused by a
        limit), its path when that is a route's, so that a 429 is counted against its route;
        anything else is one label (a scan of random paths must not make a label each)."""
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", UNMATCHED))
        if self._known is None:
            self._known = frozenset(self._paths())
        return scope["path"] if scope["path"] in self._known else UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _SANE_ID.fullmatch(value):
                    rid = value.decode("ascii")
                break
        rid = rid or os.urandom(8).hex()
        token = REQUEST_ID.set(rid)
        status = 500  # what the client gets when the app fails before answering
        header = (b"x-request-id", rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            path = self._route(scope)
            method = scope["method"]
            code = str(status)
            self.metrics.requests.labels(path, method, code).inc()
            self.metrics.latency.labels(path, method, code).observe(elapsed)
            if self.log_requests:
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": client_of(scope),
                    },
                )
            REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (of the request being answered, else ``-``) and ``pid`` to every
    record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.pid = os.getpid()
        record.__dict__.pop("color_message", None)  # uvicorn's message again, with ANSI codes
        return True


def json_log_config(level: str = "info", *, access: bool = True) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server (and gunicorn's own logs): one JSON
    object per line on stderr, ``{"level", "logger", "message", "request_id", "pid", "time",
    ...}`` plus an access line's fields (``method``, ``path``, ``route``, ``status``,
    ``duration_ms``, ``client``)."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "{levelname}{name}{message}{request_id}{pid}",
                "style": "{",
                "timestamp": "time",  # ISO 8601, UTC
                "rename_fields": {"levelname": "level", "name": "logger"},
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": lvl},
        "loggers": {
            # gunicorn's own loggers keep their handlers unless given these.
            "gunicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "citywok.access": {
                "handlers": ["stderr"],
                "level": "INFO" if access else "CRITICAL",
                "propagate": False,
            },
        },
    }
