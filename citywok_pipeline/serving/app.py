"""The read-only HTTP API over a live snapshot (FastAPI): match, search, episodes, health.

Nothing here can start ingestion: the server only opens published (or locally built)
snapshots and swaps to newer ones. OpenAPI docs are at ``/docs``.

`serve` runs it under gunicorn with uvicorn workers: matching is CPU work in Python and
numpy, so one process uses about one core, and a server runs one worker per core on one
port. The app is imported once and the workers forked from it (they start at once); each
opens the snapshot itself after the fork (shards are memory maps: their pages are shared,
not copied), follows new versions on its own, and is restarted by gunicorn if it dies.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..fingerprint.audio import DecodeError, decode_bytes
from ..fingerprint.matcher import match_samples
from .live import BucketSource, DirectorySource, Held, LiveSnapshot, SnapshotSource

DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
DEFAULT_MAX_CLIP_S = 120.0
DEFAULT_POLL_S = 5.0
MAX_SEARCH_LIMIT = 100


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Where a server's versions come from and how it treats uploads.

    Attributes
    ----------
    source : str
        A snapshot or pull directory, or a bucket URL (``file://...``, ``s3://...``).
    cache_dir : str, optional
        Where a bucket is pulled to (required for a bucket URL).
    max_upload_bytes : int
        Largest accepted upload for ``POST /match``.
    max_clip_s : float
        Only the first this many seconds of an upload are decoded and matched.
    poll_s : float, optional
        Seconds between checks for a new version; None never checks.
    decoder : {"libav", "ffmpeg"}
        ``libav`` decodes uploads inside the worker (PyAV: fast); ``ffmpeg`` runs the
        ffmpeg command for each (about 20 times the CPU of a 5 s clip, but a decoder crash or
        hang on a hostile file stays in that process).
    """

    source: str
    cache_dir: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_clip_s: float = DEFAULT_MAX_CLIP_S
    poll_s: float | None = DEFAULT_POLL_S
    decoder: Literal["libav", "ffmpeg"] = "libav"

    def snapshot_source(self) -> SnapshotSource:
        """The source this config names (S3 settings come from the environment)."""
        from ..publishing import is_bucket_url, open_bucket

        if is_bucket_url(self.source):
            if not self.cache_dir:
                raise ValueError(f"{self.source}: a bucket source needs a cache directory")
            return BucketSource(open_bucket(self.source), self.cache_dir)
        return DirectorySource(self.source)


class _Embedder:
    """The query embedder, loaded once per server (in the background when there are segments
    at start, so matching answers before the model is in memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._value is None:
                from ..transcripts.embedder import load_embedder

                self._value = load_embedder()
            return self._value

    def warm_in_background(self) -> None:
        threading.Thread(target=self.get, name="citywok-embedder", daemon=True).start()


def segment_count(snapshot: Any) -> int:
    """Transcript segments in every shard (0 for a fingerprints-only snapshot)."""
    return sum(int((s.meta.get("segments") or {}).get("n", 0)) for s in snapshot.shards)


def _searcher(held: Held, embedder: _Embedder) -> Any:
    searcher = held.cache.get("searcher")
    if searcher is None:
        try:
            from ..transcripts.search import SegmentSearcher
        except ImportError:
            raise HTTPException(501, "transcript search is not available in this build") from None
        searcher = held.cache["searcher"] = SegmentSearcher(held.snapshot, embedder.get())
    return searcher


class BodyLimit:
    """Refuse a request whose declared body exceeds the upload limit (plus room for the
    multipart framing) with 413 before reading it: a plain ASGI middleware, no per-request
    cost beyond a header lookup."""

    FRAMING_BYTES = 64 << 10

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length", "")
            if length.isdigit() and int(length) > self.max_upload_bytes + self.FRAMING_BYTES:
                response = JSONResponse(
                    {"detail": f"upload too large: {int(length)} bytes, the limit is "
                               f"{self.max_upload_bytes} bytes"},
                    status_code=413,
                )  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(config: ServeConfig) -> FastAPI:
    """The API over ``config.source``. The source is opened when the app starts (its
    lifespan), in the process that serves it, and watched every ``config.poll_s`` seconds."""
    started = time.monotonic()
    embedder = _Embedder()
    # Matching and search are CPU work holding the GIL for most of it: a worker runs one at
    # a time (the others wait their turn in the event loop) instead of interleaving them,
    # which costs each request more CPU and all of them latency. Both are made in the
    # lifespan: the snapshot in the serving process, the limiter in its event loop.
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live = state["live"] = LiveSnapshot(config.snapshot_source())
        state["cpu"] = anyio.CapacityLimiter(1)
        with live.use() as held:
            if segment_count(held.snapshot):
                embedder.warm_in_background()
        if config.poll_s:
            live.watch(config.poll_s)
        yield
        live.close()

    def current() -> LiveSnapshot:
        live: LiveSnapshot | None = state.get("live")
        if live is None:
            raise HTTPException(503, "starting: the snapshot is not open yet")
        return live

    app = FastAPI(
        title="CityWok",
        summary="Which episode, and when: audio fingerprint matching and transcript search.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_upload_bytes=config.max_upload_bytes)

    def match_upload(data: bytes, name: str) -> dict[str, Any]:
        with current().use() as held:
            try:
                samples = decode_bytes(
                    data,
                    sample_rate=held.snapshot.params.sample_rate,
                    label=name,
                    suffix=Path(name).suffix,
                    max_seconds=config.max_clip_s,
                    in_process=config.decoder == "libav",
                )
            except DecodeError as exc:
                raise HTTPException(415, f"not audio ffmpeg can read: {exc}") from None
            return match_samples(samples, held.snapshot).to_dict(name)

    @app.post("/match", summary="Which episode an audio clip comes from, and at what second")
    async def match(
        file: Annotated[UploadFile, File(description="Audio in any format ffmpeg reads.")],
    ) -> dict[str, Any]:
        """Answers ``{"query", "ambiguous", "matches": [...]}`` (the ``citywok match --json``
        shape); ``matches`` is empty when the clip is not in the library. Only the first
        ``--max-clip`` seconds of a longer upload are matched."""
        name = file.filename or "upload"
        limit = config.max_upload_bytes
        data = await file.read(limit + 1)
        if not data:
            raise HTTPException(400, f"{name}: the upload is empty")
        if len(data) > limit:
            raise HTTPException(413, f"{name}: upload too large, the limit is {limit} bytes")
        async with state["cpu"]:
            # On the event loop itself, as a sync worker would: a match is 10-20 ms of CPU,
            # and handing it to a thread costs more (the loop and the thread take turns at
            # the GIL), while a worker busy matching leaves new connections to idle workers
            # instead of accepting them into its own queue. Measured with 8 clients on 2 cores:
            # 15.6 -> 14.7 ms of CPU per request, 114 -> 129 requests/s.
            return match_upload(data, name)

    def search_segments(q: str, limit: int, keywords: list[str]) -> list[dict[str, Any]]:
        with current().use() as held:
            if not segment_count(held.snapshot):
                raise HTTPException(
                    404,
                    f"version {held.version or 'in use'} holds no transcript segments "
                    "(built with fingerprints only): there is nothing to search",
                )
            hits = _searcher(held, embedder).search(q, limit=limit, keywords=keywords)
            return [h.to_dict() for h in hits]

    @app.get("/search", summary="Transcript segments nearest a text, best first")
    async def search(
        q: Annotated[str, Query(min_length=1, description="What is said, in any words.")],
        limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
        keyword: Annotated[
            list[str] | None,
            Query(description="Only segments saying this word or phrase (repeatable)."),
        ] = None,
    ) -> list[dict[str, Any]]:
        """A list in the ``citywok search --json`` shape:
        ``{"episode_id", "source", "start_s", "end_s", "text", "score"}``."""
        if not q.strip():
            raise HTTPException(400, "q: the query is blank")
        with current().use() as held:
            has_segments = segment_count(held.snapshot) > 0
        if has_segments:
            # The model loads once (seconds) without holding up the matches waiting their turn.
            await anyio.to_thread.run_sync(embedder.get)
        return await anyio.to_thread.run_sync(
            search_segments, q, limit, keyword or [], limiter=state["cpu"]
        )

    @app.get("/episodes", summary="Every episode in the version being served")
    def episodes() -> dict[str, Any]:
        with current().use() as held:
            return {
                "version": held.version,
                "episodes": [
                    {
                        "episode_id": e.episode_id,
                        "season": e.season,
                        "show": e.show,
                        "season_number": e.season_number,
                        "episode_number": e.episode_number,
                        "title": e.title,
                        "source": e.source,
                        "duration_s": e.duration_s,
                    }
                    for e in held.snapshot.episodes
                ],
            }

    @app.get("/healthz", summary="Whether the server is serving, which version, and counts")
    def healthz() -> dict[str, Any]:
        live = current()
        with live.use() as held:
            return {
                "status": "ok",
                "serving": True,
                "version": held.version,
                "source": live.source.describe(),
                "episodes": len(held.snapshot.episodes),
                "segments": segment_count(held.snapshot),
                "shards": len(held.snapshot.shards),
                "uptime_s": round(time.monotonic() - started, 3),
                "worker_pid": os.getpid(),
                "version_since": held.opened_at,
                "swaps": live.swaps,
                "last_refresh_error": live.last_error,
            }

    return app


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Have glibc keep freed memory for the next request instead of returning it.

    By default every numpy temporary over 128 KiB is its own memory map, unmapped when freed,
    so each request faults in and zeroes fresh pages: about a thousand per 5 s clip, a tenth
    of its CPU time. With the thresholds raised, the heap keeps up to 64 MiB of freed memory
    and arrays up to 32 MiB come from it. True when set (glibc only; elsewhere nothing).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    )


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def serve(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Run the API until interrupted: gunicorn with ``workers`` uvicorn workers forked from
    this process (nothing of the snapshot may be open here: each worker opens its own).
    SIGTERM stops it gracefully; a worker that dies is replaced."""
    from gunicorn.app.base import BaseApplication

    reuse_freed_memory()  # inherited by the workers
    app = create_app(config)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": "uvicorn_worker.UvicornWorker",
        # The app is built here, before the fork: workers start without importing again.
        "preload_app": True,
        # A worker whose event loop stops answering for this long is killed and replaced.
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 5,
        "loglevel": log_level,
        "accesslog": None,
        "errorlog": "-",
        "proc_name": "citywok-serve",
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> FastAPI:
            return app

    Server().run()
