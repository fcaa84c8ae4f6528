"""The read-only HTTP API over a live snapshot (FastAPI): match, search, episodes, probes and
metrics.

Nothing here can start ingestion: the server only opens published (or locally built)
snapshots and swaps to newer ones. OpenAPI docs are at ``/docs`` (unless switched off).

Every route sits behind the same pure ASGI middlewares (outermost first): `Observe` (request
id, JSON access log, Prometheus metrics), CORS when origins are allowed, and `Guard` (API
keys, the rate limit, concurrent uploads per client, body size and time limits). A route
added to `create_app` gets them all. Answers are JSON with non-ASCII characters escaped, as
``citywok match --json`` prints them, so that a file name that is not UTF-8 (kept as
surrogate escapes) is answered, not a 500.

`serve` runs it under gunicorn with uvicorn workers: matching is CPU work in Python and
numpy, so one process uses about one core, and a server runs one worker per core on one
port. The app is imported once and the workers forked from it (they start at once); each
opens the snapshot itself after the fork (shards are memory maps: their pages are shared,
not copied), follows new versions on its own, and is restarted by gunicorn if it dies.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ..fingerprint.audio import DecodeError, DecodeTimeoutError, decode_bytes
from ..fingerprint.matcher import match_samples
from ..fingerprint.recording import segment_samples
from .guard import Guard, GuardConfig, load_api_keys, rate_buckets
from .live import BucketSource, DirectorySource, Held, LiveSnapshot, SnapshotSource
from .observe import Metrics, Observe
from .uploads import read_upload, upload_openapi

DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
DEFAULT_MAX_CLIP_S = 120.0
# An upload matched with segments=true is a long recording: ten minutes of it cost about ten
# seconds of one worker's CPU.
DEFAULT_MAX_RECORDING_S = 600.0
DEFAULT_POLL_S = 5.0
MAX_SEARCH_LIMIT = 100


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Where a server's versions come from, how it treats uploads, and its limits.

    Attributes
    ----------
    source : str
        A snapshot or pull directory, or a bucket URL (``file://...``, ``s3://...``).
    cache_dir : str, optional
        Where a bucket is pulled to (required for a bucket URL).
    max_upload_bytes : int
        Largest accepted upload for ``POST /match`` (413 past it, counted as it arrives).
    max_clip_s : float
        Only the first this many seconds of an upload are decoded and matched.
    max_recording_s : float
        With ``segments=true``: only the first this many seconds of an upload are decoded and
        segmented; a longer one is cut there, with a warning in the answer.
    decode_timeout_s : float
        Wall-clock limit for decoding one upload (422 past it).
    poll_s : float, optional
        Seconds between checks for a new version; None never checks.
    decoder : {"libav", "ffmpeg"}
        ``libav`` decodes uploads inside the worker (PyAV: fast); ``ffmpeg`` runs the
        ffmpeg command for each (about 20 times the CPU of a 5 s clip, but a decoder crash or
        hang on a hostile file stays in that process).
    api_key_file : str, optional
        Clients must send one of the keys whose SHA-256 this file lists (see
        `load_api_keys`); None: no keys. The probes are open.
    rate_per_s, rate_burst : float, int, optional
        Requests per second per client (its key, else its address), shared by the workers,
        and the burst allowed (default: one second's worth); None: no limit.
    max_client_uploads : int
        Uploads of one client in progress at once, per worker (429 past it).
    header_timeout_s, body_timeout_s, request_timeout_s : float
        A connection's request headers must arrive within ``header_timeout_s`` (or it is
        closed), its body within ``body_timeout_s`` of them (408), and its answer must start
        within ``request_timeout_s`` of them (503).
    max_connections : int
        Connections one worker holds at once (503 past it).
    cors_origins : tuple of str
        Origins whose web pages may call the API (CORS); empty: none.
    docs : bool
        Serve ``/docs``, ``/redoc`` and ``/openapi.json``.
    access_log : bool
        Log one JSON line per request.
    match_by_words : bool
        A clip the fingerprint finds nothing for is identified by what is said (transcribed,
        its first 30 s, and found in the transcripts; ``"method": "words"``) when the version
        holds transcripts.
    """

    source: str
    cache_dir: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_clip_s: float = DEFAULT_MAX_CLIP_S
    max_recording_s: float = DEFAULT_MAX_RECORDING_S
    decode_timeout_s: float = 10.0
    poll_s: float | None = DEFAULT_POLL_S
    decoder: Literal["libav", "ffmpeg"] = "libav"
    api_key_file: str | None = None
    rate_per_s: float | None = None
    rate_burst: int | None = None
    max_client_uploads: int = 8
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    max_connections: int = 1000
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    docs: bool = True
    access_log: bool = True
    match_by_words: bool = True

    def snapshot_source(self) -> SnapshotSource:
        """The source this config names (S3 settings come from the environment)."""
        from ..blobstore import is_bucket_url, open_store

        if is_bucket_url(self.source):
            if not self.cache_dir:
                raise ValueError(f"{self.source}: a bucket source needs a cache directory")
            return BucketSource(open_store(self.source), self.cache_dir)
        return DirectorySource(self.source)

    def guard_config(self) -> GuardConfig:
        """The limits `Guard` applies (the API key file is read now)."""
        return GuardConfig(
            max_body_bytes=self.max_upload_bytes,
            api_keys=load_api_keys(self.api_key_file) if self.api_key_file else {},
            rate_per_s=self.rate_per_s,
            rate_burst=self.rate_burst,
            max_client_uploads=self.max_client_uploads,
            body_timeout_s=self.body_timeout_s,
            request_timeout_s=self.request_timeout_s,
        )


class AsciiJSON(JSONResponse):
    """JSON with non-ASCII characters escaped (``json.dumps``' default, as the CLI prints):
    always valid ASCII bytes, whatever a file name holds."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


class _Embedder:
    """The query embedder, loaded once per server (in the background when there are segments
    at start, so matching answers before the model is in memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._value is None:
                from ..transcripts.embedder import load_query_embedder

                self._value = load_query_embedder()
            return self._value

    def warm_in_background(self) -> None:
        threading.Thread(target=self.get, name="citywok-embedder", daemon=True).start()


def segment_count(snapshot: Any) -> int:
    """Transcript segments in every shard (0 for a fingerprints-only snapshot)."""
    return sum(int((s.meta.get("segments") or {}).get("n", 0)) for s in snapshot.shards)


def refused_shards(snapshot: Any) -> dict[str, str]:
    """Shards of the version left out (file name -> why); none before shards were checked."""
    refused = getattr(snapshot, "refused", None)
    return dict(refused()) if callable(refused) else {}


# URLs and absolute paths in an error message: a bucket's endpoint, the cache folder.
_INTERNALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+|(?<![\w.])/[^\s'\",;)]+")


def redact(text: str | None) -> str | None:
    """``text`` with URLs and absolute paths replaced by ``<redacted>``."""
    return None if text is None else _INTERNALS.sub("<redacted>", text)


def _searcher(held: Held, embedder: _Embedder) -> Any:
    searcher = held.cache.get("searcher")
    if searcher is None:
        try:
            from ..transcripts.search import SegmentSearcher
        except ImportError:
            raise HTTPException(501, "transcript search is not available in this build") from None
        searcher = held.cache["searcher"] = SegmentSearcher(held.snapshot, embedder.get())
        for note in searcher.notes:  # an old snapshot: searched, slower; said once per worker
            logging.getLogger("citywok.serve").warning("%s", note)
    return searcher


def create_app(config: ServeConfig) -> FastAPI:
    """The API over ``config.source``. The source is opened when the app starts (its
    lifespan), in the process that serves it, and watched every ``config.poll_s`` seconds."""
    started = time.monotonic()
    embedder = _Embedder()
    metrics = Metrics()
    # Matching and search are CPU work holding the GIL for most of it: a worker runs one at
    # a time (the others wait their turn in the event loop) instead of interleaving them,
    # which costs each request more CPU and all of them latency. Both are made in the
    # lifespan: the snapshot in the serving process, the limiter in its event loop.
    state: dict[str, Any] = {}

    def served(held: Held) -> None:
        metrics.served(
            held.version, len(held.snapshot.episodes), len(refused_shards(held.snapshot))
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live = state["live"] = LiveSnapshot(config.snapshot_source(), on_change=served)
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
        default_response_class=AsciiJSON,
        docs_url="/docs" if config.docs else None,
        redoc_url="/redoc" if config.docs else None,
        openapi_url="/openapi.json" if config.docs else None,
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return AsciiJSON({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return AsciiJSON({"detail": exc.errors()}, 422)

    def decode_upload(data: bytes, name: str, rate: int, max_seconds: float) -> Any:
        try:
            return decode_bytes(
                data,
                sample_rate=rate,
                label=name,
                suffix=Path(name).suffix,
                max_seconds=max_seconds,
                timeout_s=config.decode_timeout_s,
                in_process=config.decoder == "libav",
            )
        except DecodeTimeoutError as exc:
            raise HTTPException(422, str(exc)) from None
        except DecodeError as exc:
            raise HTTPException(415, f"not audio ffmpeg can read: {exc}") from None

    def match_upload(data: bytes, name: str) -> tuple[Any, bool]:
        """The fingerprint's answer, and whether to ask the words when it found nothing."""
        with current().use() as held:
            rate = held.snapshot.params.sample_rate
            samples = decode_upload(data, name, rate, config.max_clip_s)
            result = match_samples(samples, held.snapshot)
            by_words = (
                config.match_by_words and not result.matches and segment_count(held.snapshot) > 0
            )
        return result, by_words

    def words_upload(data: bytes, name: str) -> Any:
        """An upload the fingerprint found nothing for, identified by what is said."""
        from ..transcripts.identify import MAX_WORDS_S, WordsIdentifier
        from ..transcripts.transcriber import SAMPLE_RATE

        with current().use() as held:
            samples = decode_upload(data, name, SAMPLE_RATE, min(config.max_clip_s, MAX_WORDS_S))
            words = held.cache.get("words")
            if words is None:
                words = held.cache["words"] = WordsIdentifier(held.snapshot)
            return words.identify(samples, label=name)

    def counted(result: Any, name: str) -> dict[str, Any]:
        outcome = (
            "not_found" if not result.matches else "ambiguous" if result.ambiguous else "found"
        )
        metrics.matches.labels(outcome).inc()
        return result.to_dict(name)

    @app.post(
        "/match",
        summary="Which episode an audio clip comes from, and at what second",
        openapi_extra=upload_openapi("file", "Audio in any format ffmpeg reads."),
    )
    async def match(
        request: Request,
        segments: Annotated[
            bool, Query(description="The upload is a long recording: answer its segments.")
        ] = False,
    ) -> Response:
        """Answers ``{"query", "ambiguous", "method", "matches": [...]}`` (the ``citywok match
        --json`` shape); ``matches`` is empty when the clip is not in the library. Only the first
        ``--max-clip`` seconds of a longer upload are matched. When the audio matches nothing
        and the version holds transcripts, the clip is identified by what is said (its first
        30 s transcribed, in a thread: about a quarter of the speech's length in CPU time, next
        to nothing for music): ``"method": "words"``, and a ``note`` "no speech in the clip"
        when nothing is said. The clip is the multipart field ``file``: 400 without it or
        when it is empty, 413 past ``--max-upload``, 415 when it is not audio.

        With ``segments=true`` the upload is a long recording and the answer is the
        ``citywok match --segments --json`` shape: ``{"query", "duration_s", "segments":
        [{"episode_id", "source", "season", "start_s", "end_s", "offset_s", "confidence",
        "speed", "ambiguous"}, ...]}``; only its first ``--max-clip`` seconds (600 by
        default in this mode) are read, and a longer one is cut with a ``warnings`` entry."""
        upload = await read_upload(
            request.headers.get("content-type"), request.stream(), limit=config.max_upload_bytes
        )
        if segments:
            # Seconds of CPU, not milliseconds: in a thread (under the same one-at-a-time
            # limiter), so that the event loop keeps answering probes meanwhile.
            answer = await anyio.to_thread.run_sync(
                segment_upload, upload.data, upload.filename, limiter=state["cpu"]
            )
            return AsciiJSON(answer)
        async with state["cpu"]:
            # On the event loop itself, as a sync worker would: a match is 10-20 ms of CPU,
            # and handing it to a thread costs more (the loop and the thread take turns at
            # the GIL), while a worker busy matching leaves new connections to idle workers
            # instead of accepting them into its own queue. Measured with 8 clients on 2 cores:
            # 15.6 -> 14.7 ms of CPU per request, 114 -> 129 requests/s.
            result, by_words = match_upload(upload.data, upload.filename)
        if by_words:
            # Transcription is seconds of CPU: in a thread, as segments are.
            result = await anyio.to_thread.run_sync(
                words_upload, upload.data, upload.filename, limiter=state["cpu"]
            )
        return AsciiJSON(counted(result, upload.filename))

    def segment_upload(data: bytes, name: str) -> dict[str, Any]:
        limit = config.max_recording_s
        with current().use() as held:
            rate = held.snapshot.params.sample_rate
            # A second more than the limit: whether there was more to cut.
            samples = decode_upload(data, name, rate, limit + 1.0)
            warnings: tuple[str, ...] = ()
            if samples.size > round(limit * rate):
                samples = samples[: round(limit * rate)]
                warnings = (
                    f"cut at {limit:g} s (--max-clip): the rest of the upload was not read",
                )
            result = segment_samples(samples, held.snapshot)
        return replace(result, warnings=warnings).to_dict(name)

    def search_segments(q: str, limit: int, keywords: list[str], mode: str) -> list[dict[str, Any]]:
        with current().use() as held:
            if not segment_count(held.snapshot):
                raise HTTPException(
                    404,
                    f"version {held.version or 'in use'} holds no transcript segments "
                    "(built with fingerprints only): there is nothing to search",
                )
            hits = _searcher(held, embedder).search(q, limit=limit, keywords=keywords, mode=mode)
            return [h.to_dict() for h in hits]

    @app.get("/search", summary="Transcript segments best for a text, best first")
    async def search(
        q: Annotated[
            str, Query(description="What is said, in any words (at most 1,000 characters).")
        ] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
        keyword: Annotated[
            list[str] | None,
            Query(description="Only segments saying this word or phrase (repeatable)."),
        ] = None,
        mode: Annotated[
            Literal["hybrid", "semantic", "keyword"],
            Query(
                description="hybrid: meaning and words fused (default); semantic: meaning "
                "alone; keyword: words alone (BM25)."
            ),
        ] = "hybrid",
    ) -> Response:
        """A list in the ``citywok search --json`` shape:
        ``{"episode_id", "source", "start_s", "end_s", "text", "score"}`` (hybrid: with
        ``cosine`` and ``bm25``). 400 for an empty query or one over 1,000 characters, or a
        keyword without a letter or digit."""
        from ..transcripts.errors import TranscriptError
        from ..transcripts.search import check_query, keyword_words

        try:
            check_query(q)
        except TranscriptError as exc:
            raise HTTPException(400, f"q: {exc}") from None
        if keyword:
            try:
                for k in keyword:
                    keyword_words(k)
            except TranscriptError as exc:
                raise HTTPException(400, f"keyword: {exc}") from None
        with current().use() as held:
            has_segments = segment_count(held.snapshot) > 0
        if has_segments and mode != "keyword":
            # The model loads once (seconds) without holding up the matches waiting their turn.
            await anyio.to_thread.run_sync(embedder.get)
        hits = await anyio.to_thread.run_sync(
            search_segments, q, limit, keyword or [], mode, limiter=state["cpu"]
        )
        return AsciiJSON(hits)

    @app.get("/episodes", summary="Every episode in the version being served")
    def episodes() -> Response:
        with current().use() as held:
            return AsciiJSON(
                {
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
            )

    @app.get("/healthz", summary="Liveness: the server is up and which version it serves")
    def healthz() -> Response:
        """``{"status", "version", "episodes", "segments", "uptime_s"}``: nothing about where
        versions come from or what went wrong (``/readyz`` says that)."""
        with current().use() as held:
            return AsciiJSON(
                {
                    "status": "ok",
                    "version": held.version,
                    "episodes": len(held.snapshot.episodes),
                    "segments": segment_count(held.snapshot),
                    "uptime_s": round(time.monotonic() - started, 3),
                }
            )

    @app.get("/readyz", summary="Readiness: the version, its counts and what is refused")
    def readyz() -> Response:
        """503 until a version is open; then the version served, its counts, the shards
        refused (a failed checksum) and why, swaps, and the last refresh error, with URLs and
        paths redacted."""
        live = state.get("live")
        if live is None:
            return AsciiJSON({"status": "starting"}, 503)
        with live.use() as held:
            refused = refused_shards(held.snapshot)
            served(held)
            return AsciiJSON(
                {
                    "status": "ready",
                    "version": held.version,
                    "version_since": held.opened_at,
                    "source": "bucket" if isinstance(live.source, BucketSource) else "directory",
                    "episodes": len(held.snapshot.episodes),
                    "segments": segment_count(held.snapshot),
                    "shards": len(held.snapshot.shards),
                    "refused_shards": [
                        {"shard": name, "reason": redact(why)} for name, why in refused.items()
                    ],
                    "swaps": live.swaps,
                    "last_refresh_error": redact(live.last_error),
                    "uptime_s": round(time.monotonic() - started, 3),
                    "worker_pid": os.getpid(),
                }
            )

    @app.get("/metrics", summary="Prometheus metrics, summed over the server's workers")
    def prometheus() -> Response:
        live = state.get("live")
        if live is not None:
            with live.use() as held:
                served(held)  # refused shards can change while a version is served
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    # Added innermost first: Observe sees every request, CORS answers preflights and labels
    # refusals, Guard refuses before any route runs.
    # Starlette builds the middleware at the first request, in each worker: what the workers
    # share (the rate buckets, in shared memory) is made here, before they fork.
    guard = config.guard_config()
    app.add_middleware(Guard, config=guard, buckets=rate_buckets(guard))
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(
        Observe,
        metrics=metrics,
        paths=lambda: [getattr(r, "path", "") for r in app.routes],
        log_requests=config.access_log,
    )
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


def _report_crashes(worker: Any) -> None:
    """A worker killed inside C code (SIGSEGV, SIGABRT, SIGBUS) leaves every thread's Python
    stack in the log, and libav's last words before an abort (its assertion messages) are
    logged: PyAV drops libav's messages by default."""
    import faulthandler

    import av.logging

    faulthandler.enable()
    av.logging.set_level(av.logging.PANIC)


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
    forwarded_allow_ips: str | None = None,
) -> None:
    """Run the API until interrupted: gunicorn with ``workers`` uvicorn workers forked from
    this process (nothing of the snapshot may be open here: each worker opens its own).
    SIGTERM stops it gracefully; a worker that dies is replaced.

    Logs are JSON lines on stderr (`json_log_config`); metrics are in prometheus-client's
    multiprocess mode, in a temporary folder removed at exit. ``forwarded_allow_ips``: the
    proxies whose ``X-Forwarded-For`` names the client (gunicorn's default: 127.0.0.1).
    """
    import shutil
    import tempfile

    from gunicorn.app.base import BaseApplication

    from .observe import json_log_config
    from .worker import worker_class

    reuse_freed_memory()  # inherited by the workers
    metrics_dir = tempfile.mkdtemp(prefix="citywok-metrics-")
    # Before any metric is made: their values then live in files every worker writes.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from prometheus_client import multiprocess, values

    values.ValueClass = values.get_value_class()  # in case prometheus_client was imported
    app = create_app(config)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict[str, Any] = {
        "bind": bind,
        "workers": workers,
        "worker_class": worker_class(
            header_timeout_s=config.header_timeout_s, max_connections=config.max_connections
        ),
        # The app is built here, before the fork: workers start without importing again.
        "preload_app": True,
        # A worker whose event loop stops answering for this long is killed and replaced.
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 5,
        "loglevel": log_level,
        "accesslog": None,  # Observe logs each request, with its id
        "errorlog": "-",
        "logconfig_dict": json_log_config(log_level, access=config.access_log),
        "proc_name": "citywok-serve",
        # gunicorn's control socket is one path per user (~/.gunicorn/gunicorn.ctl): servers
        # side by side would take it from each other.
        "control_socket_disable": True,
        # A dead worker's gauges leave the sums (its counters stay: totals only grow).
        "child_exit": lambda server, worker: multiprocess.mark_process_dead(worker.pid),
        "post_worker_init": _report_crashes,
    }
    if forwarded_allow_ips is not None:
        options["forwarded_allow_ips"] = forwarded_allow_ips

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> FastAPI:
            return app

    try:
        Server().run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
