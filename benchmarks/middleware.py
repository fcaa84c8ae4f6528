"""What the query server's middleware costs per request, in process, against the bare routes.

``python -m benchmarks.middleware SNAPSHOT_DIR [--requests 2000] [--rounds 7]``
(also run by ``python -m benchmarks.serve``, which records it in serve.json).

The same app (`create_app`) is driven through ASGI directly (no sockets, no HTTP parsing: the
difference between arms is the middleware alone), in interleaved rounds, each arm's best
round kept:

- ``bare``: the routes without middleware (``user_middleware`` emptied before the first
  request), what the server ran before (its one middleware was a header lookup);
- ``default``: what ``citywok serve`` runs by default: Observe (request id, access log as
  JSON lines to /dev/null, metrics in prometheus-client's multiprocess mode) and Guard (body
  limits and timeouts, uploads per client);
- ``everything``: also an API key, a rate limit (never reached) and CORS;
- ``guard rate limit`` against ``slowapi rate limit``: the bare routes behind only Guard with
  a rate limit (``guard alone``: without one), or only slowapi's ASGI middleware with the
  same limit (in memory): the choice of rate limiter.

GET /healthz is the request measured (its own work is small, so the overhead shows);
POST /match with a 5 s clip is measured for the default and bare arms to put the overhead
beside a real request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY = "benchmark-key-0123456789abcdef"


def _app(snapshot: Path, **config: Any) -> Any:
    from citywok_pipeline.serving import ServeConfig, create_app

    return create_app(ServeConfig(source=str(snapshot), poll_s=None, **config))


def _wrapped(base: Any, middleware: list[Any]) -> Any:
    """``base`` (the started app) behind the middleware another app was configured with, as
    Starlette stacks it (the first in the list outermost). LMDB opens a shard once per
    process, so one app serves and the arms differ only in what is in front of it."""
    asgi = base
    for m in reversed(middleware):
        asgi = m.cls(asgi, *m.args, **m.kwargs)
    return asgi


def _slowapi(base: Any, limit: str) -> Any:
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    base.state.limiter = Limiter(key_func=get_remote_address, default_limits=[limit])
    limited = SlowAPIASGIMiddleware(base)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        scope["app"] = base  # what Starlette sets before its middleware, slowapi reads
        await limited(scope, receive, send)

    return app


def _guard(base: Any, snapshot: Path, rate: float | None) -> Any:
    """``base`` behind Guard alone, with or without a rate limit."""
    from citywok_pipeline.serving import ServeConfig
    from citywok_pipeline.serving.guard import Guard

    config = ServeConfig(source=str(snapshot), rate_per_s=rate, rate_burst=int(rate or 1))
    return Guard(base, config=config.guard_config())


async def _lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict]]:
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    outbox: asyncio.Queue[dict] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    return task, inbox


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip


async def _requests(app: Any, n: int, method: str, path: str, body: bytes,
                    headers: list[tuple[bytes, bytes]]) -> float:  # fmt: skip
    """Seconds per request over ``n`` requests, each checked to be answered 200."""
    status = 0

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    t0 = time.perf_counter()
    for _ in range(n):
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # no disconnect while answering
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(_scope(method, path, headers), receive, send)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}")
    return (time.perf_counter() - t0) / n


def _multipart(name: str, data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    boundary = b"citywok-middleware-bench"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + name.encode() + b'"\r\nContent-Type: audio/mpeg\r\n\r\n' + data + b"\r\n--"
            + boundary + b"--\r\n")  # fmt: skip
    headers = [(b"content-type", b"multipart/form-data; boundary=" + boundary),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    return body, headers


def bench_middleware(
    snapshot: Path, clip: bytes | None = None, *, requests: int = 2000, rounds: int = 7
) -> dict:
    """Microseconds per request of each arm (see the module docstring), best of ``rounds``."""
    from citywok_pipeline.serving.guard import hash_api_key
    from citywok_pipeline.serving.observe import json_log_config

    work = Path(tempfile.mkdtemp(prefix="citywok-middleware-"))
    # As `serve` runs: JSON logs (to /dev/null here) and file-backed metrics.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(work)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    cfg = json_log_config("info")
    cfg["handlers"]["stderr"]["stream"] = open(os.devnull, "w")  # noqa: SIM115
    logging.config.dictConfig(cfg)
    keys = work / "keys.txt"
    keys.write_text(f"sha256:{hash_api_key(KEY)} bench\n")
    rate = 1e9  # never reached: the cost of counting, not of refusing
    base = _app(snapshot)
    configured = {
        "default": _app(snapshot).user_middleware,
        "everything": _app(
            snapshot,
            api_key_file=str(keys),
            rate_per_s=rate,
            rate_burst=int(rate),
            cors_origins=("https://app.example",),
        ).user_middleware,
    }
    base.user_middleware = []  # the bare routes
    arms = {"bare": base, **{k: _wrapped(base, m) for k, m in configured.items()}}
    arms["guard alone"] = _guard(base, snapshot, None)
    arms["guard rate limit"] = _guard(base, snapshot, rate)
    arms["slowapi rate limit"] = _slowapi(base, f"{int(rate)}/second")
    auth = [(b"authorization", f"Bearer {KEY}".encode()), (b"origin", b"https://app.example")]
    headers = {name: auth if name == "everything" else [] for name in arms}
    out: dict[str, Any] = {"requests_per_round": requests, "rounds": rounds}

    async def run() -> None:
        lifespans = [await _lifespan(base)]
        best: dict[str, float] = {}
        for name, app in arms.items():  # warm
            await _requests(app, 200, "GET", "/healthz", b"", headers[name])
        for _ in range(rounds):
            for name, app in arms.items():
                s = await _requests(app, requests, "GET", "/healthz", b"", headers[name])
                best[name] = min(best.get(name, s), s)
        out["healthz_us"] = {k: round(v * 1e6, 1) for k, v in best.items()}
        out["overhead_us"] = {
            k: round((v - best["bare"]) * 1e6, 1) for k, v in best.items() if k != "bare"
        }
        if clip is not None:
            body, h = _multipart("clip.mp3", clip)
            match: dict[str, float] = {}
            for _ in range(rounds):
                for name in ("bare", "default"):
                    s = await _requests(arms[name], max(20, requests // 100), "POST", "/match",
                                        body, h)  # fmt: skip
                    match[name] = min(match.get(name, s), s)
            out["match_ms"] = {k: round(v * 1e3, 3) for k, v in match.items()}
            out["match_overhead_pct"] = round(100 * (match["default"] / match["bare"] - 1), 2)
        for task, inbox in lifespans:
            await inbox.put({"type": "lifespan.shutdown"})
            await asyncio.wait_for(task, 30)

    try:
        asyncio.run(run())
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("snapshot", type=Path, help="a snapshot or pull directory to serve")
    ap.add_argument("--clip", type=Path, default=None, help="an audio clip for POST /match")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    clip = args.clip.read_bytes() if args.clip else None
    result = bench_middleware(args.snapshot, clip, requests=args.requests, rounds=args.rounds)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
