"""What stands between a hostile client and the API: keys, rates, concurrent uploads, body
size and time limits. One pure ASGI middleware (no per-request objects beyond a closure), in
front of every route.

For each HTTP request, in order:

1. **API key** (when keys are configured): ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``,
   checked against the SHA-256 hashes in the key file; 401 otherwise.
2. **Rate** (when set): a token bucket per client (its key, else its address), shared by the
   server's worker processes; 429 with ``Retry-After`` when empty.

The probes (``/healthz``, ``/readyz``) need no key and are not rate-limited: an orchestrator's
health checks must not fail because a client is limited.
3. For a request with a body: a declared ``Content-Length`` over the limit gets 413 before
   anything is read; more than ``max_client_uploads`` uploads of one client in progress in this
   worker gets 429; then the body is counted as it is read (413 past the limit, whether or not
   a length was declared: a chunked upload too) and must arrive within ``body_timeout_s``
   (408).
4. A request not answered within ``request_timeout_s`` (waiting its turn behind other matches)
   gets 503; once its answer has started it is never cut.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import mmap
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ApiKeyError",
    "Guard",
    "GuardConfig",
    "TokenBuckets",
    "client_of",
    "hash_api_key",
    "load_api_keys",
    "rate_buckets",
]

# Room for the multipart framing around an upload (boundaries, part headers, small fields).
FRAMING_BYTES = 64 << 10
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ApiKeyError(ValueError):
    """An API key file that cannot be used; the message names the file and line."""


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of a key, as the key file holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_api_keys(path: str | Path) -> dict[str, str]:
    """``{sha256 hex: label}`` from a key file.

    One key per line: ``sha256:<64 hex digits>`` (or the bare digits), optionally followed by
    a label naming the client in logs; blank lines and ``#`` comments are ignored. The file
    holds only hashes: keys must be random (at least 128 bits, e.g. ``openssl rand -hex 32``),
    for which a plain SHA-256 is safe, unlike for passwords.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiKeyError(f"{path}: cannot read the API key file ({exc})") from None
    keys: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, label = line.partition(" ")
        digest = digest.removeprefix("sha256:").lower()
        if not _HEX64.fullmatch(digest):
            raise ApiKeyError(
                f"{path}:{n}: expected 'sha256:<64 hex digits> [label]' (the key's SHA-256, "
                "never the key itself)"
            )
        keys[digest] = label.strip() or f"key-{digest[:8]}"
    if not keys:
        raise ApiKeyError(f"{path}: no keys in the API key file")
    return keys


class TokenBuckets:
    """Token buckets per client in memory shared by forked worker processes.

    A fixed table of slots (client hash, tokens, time) in an anonymous shared mapping made
    before the fork, so every worker of a server draws on the same bucket. Updates take no
    lock: two workers updating one client at the same instant can lose one update (the
    client gets one request more), and a worker killed at any moment leaves nothing locked.
    A client's slot is found by open addressing over a few slots; one idle long enough to be
    full again is reused.

    Parameters
    ----------
    rate : float
        Tokens (requests) per second added to a bucket.
    burst : int
        A bucket's size: requests a client may make at once.
    slots : int
        Clients tracked at once (24 bytes each).
    """

    _SLOT = struct.Struct("<Qdd")
    _PROBES = 8

    def __init__(self, rate: float, burst: int, *, slots: int = 1 << 16) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate!r}, {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.slots = slots
        self._idle_s = self.burst / self.rate  # a bucket idle this long is full again
        self._mem = mmap.mmap(-1, slots * self._SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS

    def take(self, client: bytes, now: float | None = None) -> float:
        """Take one token from ``client``'s bucket: 0.0 when taken, else the seconds until
        one is there (the request is refused)."""
        now = time.monotonic() if now is None else now
        h = int.from_bytes(hashlib.blake2b(client, digest_size=8).digest(), "little") | 1
        mem, size, unpack, slots = self._mem, self._SLOT.size, self._SLOT.unpack_from, self.slots
        offset = -1
        tokens = self.burst
        oldest, oldest_at = -1, math.inf
        for i in range(self._PROBES):
            at = ((h + i) % slots) * size
            key, t, stamp = unpack(mem, at)
            if key == h:
                offset = at
                tokens = min(self.burst, t + (now - stamp) * self.rate)
                break
            if key == 0 or now - stamp >= self._idle_s:
                offset = at
                break
            if stamp < oldest_at:
                oldest, oldest_at = at, stamp
        if offset < 0:
            offset = oldest  # every probed slot busy: the least recently used gives way
        if tokens >= 1.0:
            self._SLOT.pack_into(mem, offset, h, tokens - 1.0, now)
            return 0.0
        self._SLOT.pack_into(mem, offset, h, tokens, now)
        return (1.0 - tokens) / self.rate


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """The limits `Guard` applies (see the module docstring).

    Attributes
    ----------
    max_body_bytes : int
        Largest accepted upload; a body may exceed it by `FRAMING_BYTES`.
    api_keys : mapping of str to str
        SHA-256 hex of each accepted key to its label; empty: no keys needed.
    rate_per_s, rate_burst : float, int
        Requests per second per client and the burst allowed; ``rate_per_s`` None: no limit.
    max_client_uploads : int
        Uploads of one client in progress at once in one worker.
    body_timeout_s : float
        Seconds from a request's headers to the end of its body.
    request_timeout_s : float
        Seconds from a request's headers to the start of its answer.
    """

    max_body_bytes: int
    api_keys: Mapping[str, str] = ()  # type: ignore[assignment]
    rate_per_s: float | None = None
    rate_burst: int | None = None
    max_client_uploads: int = 8
    body_timeout_s: float = 30.0
    request_timeout_s: float = 60.0


class _Refused(Exception):
    """Raised from ``receive``: the body broke a limit (the answer is ``status``)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _json_response(
    status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> list[Message]:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": head + (headers or [])},
        {"type": "http.response.body", "body": body},
    ]


_CLOSE = (b"connection", b"close")


def rate_buckets(config: GuardConfig) -> TokenBuckets | None:
    """The token buckets for ``config``'s rate limit (None: no limit). Make them before the
    worker processes fork, and give them to each worker's `Guard`: then they are shared."""
    rate = config.rate_per_s
    return TokenBuckets(rate, config.rate_burst or max(1, math.ceil(rate))) if rate else None


class Guard:
    """The limits of `GuardConfig`, as one pure ASGI middleware (``buckets``: see
    `rate_buckets`; made here when not given, for this process alone)."""

    def __init__(
        self, app: ASGIApp, *, config: GuardConfig, buckets: TokenBuckets | None = None
    ) -> None:
        self.app = app
        self.config = config
        self.keys = {bytes.fromhex(h): label for h, label in dict(config.api_keys).items()}
        self.buckets = buckets if buckets is not None else rate_buckets(config)
        self.uploads: dict[str, int] = {}  # client -> uploads in progress in this worker
        self.max_body = config.max_body_bytes + FRAMING_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "-"
        length: bytes | None = None
        chunked = False
        presented: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
            elif name == b"x-api-key":
                presented = value.strip()

        probe = scope["path"] in OPEN_PATHS
        if self.keys and not probe:
            label = None if presented is None else self.keys.get(hashlib.sha256(presented).digest())
            if label is None:
                why = "an API key is required" if presented is None else "the API key is not valid"
                await _send_all(send, 401, f"{why}: send it as 'Authorization: Bearer KEY'",
                                [(b"www-authenticate", b'Bearer realm="citywok"')])  # fmt: skip
                return
            client = f"key:{label}"
        scope.setdefault("state", {})["client"] = client

        if self.buckets is not None and not probe:
            wait = self.buckets.take(client.encode())
            if wait:
                retry = max(1, math.ceil(wait))
                await _send_all(send, 429, f"too many requests: retry in {retry} s",
                                [(b"retry-after", str(retry).encode())])  # fmt: skip
                return

        if not chunked and (length is None or length == b"0"):
            await self._call(scope, receive, send, None)
            return
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_all(send, 413, f"upload too large: {int(length)} bytes, the limit is "
                            f"{self.config.max_body_bytes} bytes", [_CLOSE])  # fmt: skip
            return
        if self.uploads.get(client, 0) >= self.config.max_client_uploads:
            await _send_all(send, 429, "too many uploads in progress from this client (the "
                            f"limit is {self.config.max_client_uploads})",
                            [(b"retry-after", b"1"), _CLOSE])  # fmt: skip
            return
        self.uploads[client] = self.uploads.get(client, 0) + 1
        try:
            await self._call(scope, receive, send, asyncio.get_running_loop().time())
        finally:
            if self.uploads[client] > 1:
                self.uploads[client] -= 1
            else:
                del self.uploads[client]

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, body_from: float | None
    ) -> None:
        """Run the app with the body counted and timed (``body_from``: when the body may start;
        None: there is none). A broken body limit or the request timeout is answered here if
        the app has not started its answer: an app catching the error cannot change the
        status. An answer that starts before the body is all read closes the connection (the
        rest of the body is not read)."""
        config = self.config
        started = False
        body_done = body_from is None
        refused: _Refused | None = None
        got = 0
        deadline = None if body_from is None else body_from + config.body_timeout_s

        async def limited_receive() -> Message:
            nonlocal got, body_done, refused
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refused = _Refused(
                    408, f"the upload did not arrive within {config.body_timeout_s:g} s"
                )
                raise refused from None
            if message["type"] == "http.request":
                got += len(message.get("body", b""))
                if got > self.max_body:
                    refused = _Refused(
                        413, f"upload too large: the limit is {config.max_body_bytes} bytes"
                    )
                    raise refused
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if refused is not None:
                    raise refused
                started = True
                timeout.reschedule(None)
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        try:
            async with asyncio.timeout(config.request_timeout_s) as timeout:
                await self.app(scope, limited_receive, guarded_send)
        except _Refused as exc:
            if started:
                raise
            await _send_all(send, exc.status, exc.detail, [_CLOSE])
        except TimeoutError:
            if started or not timeout.expired():
                raise
            await _send_all(send, 503, "the server is busy: the request was not answered "
                            f"within {config.request_timeout_s:g} s",
                            [(b"retry-after", b"1")] + ([] if body_done else [_CLOSE]))  # fmt: skip


async def _send_all(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    for message in _json_response(status, detail, headers):
        await send(message)


def client_of(scope: Mapping[str, Any]) -> str:
    """The client a request is counted against: ``key:<label>`` for an API key, else its
    address (set by `Guard`)."""
    state = scope.get("state") or {}
    if "client" in state:
        return str(state["client"])
    return scope["client"][0] if scope.get("client") else "-"
