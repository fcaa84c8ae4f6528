"""Hostile clients against a real `citywok serve`: oversized and chunked bodies, stalled
connections, too many uploads at once, too many requests, slow decodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import select
import selectors
import socket
import subprocess
import time
from pathlib import Path

import pytest

from citywok_pipeline.serving.guard import Guard, GuardConfig

from .conftest import Library, Server, ServerFactory

BOUNDARY = b"citywok-test-boundary"


def multipart_head(name: str = "clip.mp3") -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + name.encode() + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )


def request_head(port: int, headers: dict[str, str]) -> bytes:
    lines = ["POST /match HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_response(sock: socket.socket, timeout_s: float = 30) -> tuple[int, bytes]:
    """(status, whole answer) of one HTTP response; the server closes after it here."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data or not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


@pytest.fixture(scope="module")
def strict(library: Library, start_server: ServerFactory) -> Server:
    """One worker with tight limits on uploads: 300 kB, 2 at once per client, 0.5 s to
    decode (of up to 10 hours)."""
    return start_server(str(library.served), "--poll", "0", "--workers", "1",
                        "--max-upload", "300000", "--max-client-uploads", "2",
                        "--max-clip", "36000", "--decode-timeout", "0.5")  # fmt: skip


def test_a_chunked_upload_over_the_limit_gets_413_before_it_is_read_or_spooled(
    strict: Server,
) -> None:
    # No Content-Length: the limit is only known to be passed while the body arrives. Before,
    # the whole body was read (spooled to a temporary file), then refused.
    server = strict
    port = int(server.url.rsplit(":", 1)[1])
    sent = 0
    with connect(server.url) as sock:
        sock.sendall(request_head(port, {"Transfer-Encoding": "chunked"}))
        chunk = b"\0" * (64 << 10)
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        head = multipart_head("huge.wav")
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        # Up to 200 MB, until the server answers (it must, long before).
        while sent < 200 << 20:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, answer = read_response(sock)
    assert status == 413, answer
    assert b"the limit is 300000 bytes" in answer
    # What the kernel's socket buffers hold besides the 300 kB read: a few MB at most.
    assert sent < 16 << 20


def test_stalled_connections_are_closed_at_the_header_and_body_deadlines(
    library: Library, start_server: ServerFactory
) -> None:
    # 2,000 clients: half send a request's headers a little at a time and stop, half send
    # headers and 10 bytes of a 100 kB body and stop. None may stay open.
    n = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * n + 1000)), hard))
    server = start_server(str(library.served), "--poll", "0", "--workers", "1",
                          "--header-timeout", "1", "--body-timeout", "1",
                          "--max-connections", str(2 * n), "--max-client-uploads", str(n))  # fmt: skip
    port = int(server.url.rsplit(":", 1)[1])
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            if i % 2:
                s.sendall(request_head(port, {"Content-Length": "100000"}) + multipart_head()[:10])
            else:
                s.sendall(b"POST /match HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            socks.append(s)
        opened_all = time.monotonic()
        answers: list[bytes] = []
        buffers = {s.fileno(): b"" for s in socks}
        with selectors.DefaultSelector() as sel:  # epoll: select() stops at fd 1024
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
            while buffers and time.monotonic() - opened_all < 30:
                for key, _ in sel.select(timeout=1.0):
                    s = key.fileobj
                    try:
                        chunk = s.recv(65536)  # type: ignore[union-attr]
                    except ConnectionResetError:
                        chunk = b""
                    if chunk:
                        buffers[key.fd] += chunk
                    else:
                        answers.append(buffers.pop(key.fd))
                        sel.unregister(s)
            open_socks = buffers
        assert not open_socks, f"{len(open_socks)} of {n} stalled connections are still open"
        statuses = sorted({a.split(b" ", 2)[1] for a in answers if a})
        # Stalled headers are closed without an answer; a stalled body gets 408.
        assert statuses == [b"408"]
        assert sum(1 for a in answers if a.startswith(b"HTTP/1.1 408")) == n // 2
    finally:
        for s in socks:
            s.close()
    with server.client() as http:
        assert http.get("/healthz").status_code == 200


def test_a_client_with_too_many_uploads_in_progress_gets_429(
    library: Library, strict: Server
) -> None:
    server = strict
    port = int(server.url.rsplit(":", 1)[1])
    clip = library.clip("alpha-s01e01", 2.0, "cap.mp3").read_bytes()
    body = multipart_head("cap.mp3") + clip + b"\r\n--" + BOUNDARY + b"--\r\n"
    head = request_head(port, {"Content-Length": str(len(body))})
    slow = [connect(server.url) for _ in range(2)]
    for s in slow:  # two uploads under way: headers and the first bytes
        s.sendall(head + body[:100])
    with connect(server.url) as third:
        third.sendall(head + body)
        status, answer = read_response(third)
    assert status == 429, answer
    assert b"retry-after: 1" in answer.lower() and b"the limit is 2" in answer
    for s in slow:  # the two finish and are answered; then there is room again
        s.sendall(body[100:])
        assert read_response(s)[0] == 200
        s.close()
    with server.client() as http:
        r = http.post("/match", files={"file": ("cap.mp3", clip)})
    assert r.status_code == 200 and r.json()["matches"][0]["episode_id"] == "alpha-s01e01"


def test_a_client_over_its_rate_gets_429_with_retry_after_across_workers(
    library: Library, start_server: ServerFactory
) -> None:
    server = start_server(str(library.served), "--poll", "0", "--workers", "2",
                          "--rate-limit", "0.2", "--rate-burst", "3",
                          "--forwarded-allow-ips", "127.0.0.1")  # fmt: skip
    # A new connection each time, so both workers answer: they share the buckets.
    first = [httpx_get(server.url, "/episodes", "10.0.0.1") for _ in range(8)]
    other = httpx_get(server.url, "/episodes", "10.0.0.2")
    assert [r.status_code for r in first] == [200] * 3 + [429] * 5
    assert 1 <= int(first[-1].headers["retry-after"]) <= 5
    assert "too many requests" in first[-1].json()["detail"]
    assert other.status_code == 200
    # The probes are never limited: a limited client's health checks still answer.
    assert httpx_get(server.url, "/healthz", "10.0.0.1").status_code == 200


def httpx_get(url: str, path: str, client_ip: str):  # type: ignore[no-untyped-def]
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:
        return http.get(path, headers={"X-Forwarded-For": client_ip})


def test_an_upload_that_takes_too_long_to_decode_gets_422(strict: Server, tmp_path: Path) -> None:
    # 10 hours of silence in 16 kB (--max-clip is 10 hours here): decoding stops at 0.5 s.
    path = tmp_path / "long.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono",
                    "-t", "36000", "-c:a", "flac", "-frame_size", "65535", "-strict", "-2",
                    str(path)], check=True)  # fmt: skip
    with strict.client() as http:
        r = http.post("/match", files={"file": ("long.flac", path.read_bytes())})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "long.flac: decoding timed out after 0.5 s"


# The request timeout, on the middleware itself (a queue of matches long enough to reach it
# would take seconds of CPU): an app that never answers, and one that answers late.


def run_guard(app, *, request_timeout_s: float) -> list[dict]:  # type: ignore[no-untyped-def]
    guard = Guard(app, config=GuardConfig(max_body_bytes=100, request_timeout_s=request_timeout_s))
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "client": ("1.2.3.4", 1)}
    asyncio.run(guard(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_a_request_not_answered_within_the_request_timeout_gets_503() -> None:
    async def never(scope, receive, send):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()

    start, body = run_guard(never, request_timeout_s=0.1)
    assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
    assert "not answered within 0.1 s" in json.loads(body["body"])["detail"]


def test_an_answer_that_has_started_is_never_cut_by_the_request_timeout() -> None:
    async def slow_body(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"late but whole"})

    start, body = run_guard(slow_body, request_timeout_s=0.1)
    assert start["status"] == 200 and body["body"] == b"late but whole"
