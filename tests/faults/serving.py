"""Tools of the suite's serving tests: a real `citywok serve` on a free port, and a published
version of the suite's library to serve."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from citywok_pipeline.blobstore import LocalBlobStore
from citywok_pipeline.publishing import publish_snapshot, pull_version
from tests.conftest import free_port, stop_process_group

from .conftest import CITYWOK


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_server(source: Path | str, *args: str, log: Path) -> Iterator[Server]:
    """``citywok serve SOURCE ARGS...`` until /healthz answers; stopped (its whole session)
    when the block ends."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(CITYWOK), "serve", str(source), "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"citywok serve exited {proc.returncode}: {server.log_text()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"citywok serve did not answer in 90 s: {server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        stop_process_group(proc)


@dataclass(frozen=True)
class Published:
    bucket: LocalBlobStore
    served: Path  # a pull directory: DIR/current -> versions/<version>
    version: str


def publish_and_pull(snapshot: Path, work: Path) -> Published:
    """``snapshot`` published to a local bucket under ``work`` and pulled beside it."""
    bucket = LocalBlobStore(work / "bucket")
    version = publish_snapshot(snapshot, bucket).version
    pull_version(bucket, work / "served")
    return Published(bucket, work / "served", version)


def worker_peak_rss_mb(server: Server) -> float:
    """The largest peak RSS (VmHWM) of the server's processes, in MiB."""
    peak = 0
    for pid in _session(server.proc.pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


def _session(sid: int) -> list[int]:
    from .conftest import session_pids

    return session_pids(sid)
