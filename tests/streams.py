"""Live inputs for tests: a local HTTP server that sends a body in pieces and holds back the
rest until told, an HLS playlist made by ffmpeg's muxer, and a pipe written the same way.

Nothing here sleeps: a test opens the gate when it has seen what it waits for, so "the
samples came before the rest was sent" is a fact checked, not a timing hoped for.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

# How long a server thread waits on a gate nobody opens before giving up (a failed test).
GATE_TIMEOUT_S = 60.0


@dataclass
class Gate:
    """What a gated sender has sent, and the event that lets the rest go."""

    opened: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)  # the first part is out
    done: threading.Event = field(default_factory=threading.Event)  # all of it is out

    def open(self) -> None:
        self.opened.set()


def _send_gated(write, data: bytes, split: int, gate: Gate) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(OSError):  # the reader went away
        write(data[:split])
        gate.held.set()
        if not gate.opened.wait(GATE_TIMEOUT_S):
            return
        write(data[split:])
        gate.done.set()


@contextlib.contextmanager
def gated_http(data: bytes, *, split: int, path: str = "/live.mp3") -> Iterator[tuple[str, Gate]]:
    """Serve ``data`` at ``path`` as a live stream would (HTTP/1.0, no length: it ends when the
    connection closes): the first ``split`` bytes at once, the rest when the gate opens.

    Yields the URL and the gate; the gate opens on exit, so no thread outlives the test.
    """
    gate = Gate()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != path:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.end_headers()

            def write(b: bytes) -> None:
                self.wfile.write(b)
                self.wfile.flush()

            _send_gated(write, data, split, gate)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", gate
    finally:
        gate.open()
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def gated_pipe(data: bytes, *, split: int) -> Iterator[tuple[int, Gate]]:
    """A pipe written like :func:`gated_http`: yields its read end (a descriptor, owned by
    the caller) and the gate; the write end closes when all is written."""
    read_fd, write_fd = os.pipe()
    gate = Gate()
    out = os.fdopen(write_fd, "wb", buffering=0)

    def writer() -> None:
        with out:
            _send_gated(out.write, data, split, gate)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield read_fd, gate
    finally:
        gate.open()
        thread.join()


@contextlib.contextmanager
def http_folder(root: Path) -> Iterator[str]:
    """A plain http.server over ``root``; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def make_hls(source: Path, folder: Path, *, segment_s: float = 1.0) -> Path:
    """An HLS playlist of ``source`` (AAC in MPEG-TS segments) by ffmpeg's hls muxer."""
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "live.m3u8"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
         "-c:a", "aac", "-b:a", "96k", "-f", "hls", "-hls_time", str(segment_s),
         "-hls_list_size", "0", "-hls_playlist_type", "vod", str(playlist)],
        check=True,
    )  # fmt: skip
    return playlist
