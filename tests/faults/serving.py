"""Tools of the suite's serving tests: a real `citywok serve` on a free port, and a published
version of the suite's library to serve."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from citywok_pipeline.blobstore import LocalBlobStore
from citywok_pipeline.publishing import publish_snapshot, pull_version
from tests.conftest import Server, launch_server, stop_process_group


@contextlib.contextmanager
def running_server(source: Path | str, *args: str, log: Path) -> Iterator[Server]:
    """``citywok serve SOURCE ARGS...`` until /healthz answers; stopped (its whole session)
    when the block ends."""
    server = launch_server(source, *args, log=log)
    try:
        yield server
    finally:
        stop_process_group(server.proc)


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
