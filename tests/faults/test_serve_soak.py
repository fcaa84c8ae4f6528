"""The serve soak: a fixed number of clients post clips back to back to a 2-worker server for
30 s (5 minutes under `make faults`) while the served version is swapped every 10 s and one
worker is SIGKILLed half way. Every request is answered 200 with the right episode and
second: 0 failed, 0 wrong.

A request caught in the killed worker loses its connection, as any client of a crashed
process does; clients retry such a request once on a new connection (POST /match changes
nothing, so a retry is safe), and the retries are counted apart. A retried request that fails
again, or any answer other than 200, is a failure.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.library import scan_media
from citywok_pipeline.publishing import publish_snapshot, pull_version
from citywok_pipeline.snapshot import Snapshot, shard_paths, write_shard

from .conftest import LONG, SAMPLE_RATE, FaultFigures, Library, session_pids, wait_until
from .serving import publish_and_pull, running_server

pytestmark = pytest.mark.slow

SOAK_S = 300.0 if LONG else 30.0
SWAP_EVERY_S = 10.0
CLIENTS = 3
CLIP_S = 4.0


@dataclass
class Tally:
    requests: int = 0
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retried: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def rebuilt_copy(served: Path, staging: Path) -> Path:
    """The served version with its first shard written again (same postings, other bytes):
    a second version to swap to."""
    import shutil

    shutil.copytree(served / "current", staging)
    (staging / "manifest.json").unlink()
    with Snapshot.open(staging) as snap:
        shard = snap.shards[0]
        eps, season, params = shard.episodes, shard.season, snap.params
        hashes = [shard.postings.episode_hashes(i) for i in range(len(eps))]
    write_shard(shard_paths(staging)[0], season=season, episodes=eps, hashes=hashes,
                params=params, extra={"rebuilt_for": "soak"})  # fmt: skip
    return staging


def test_serve_soak_with_swaps_and_a_killed_worker_loses_no_request(
    library: Library, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    from citywok_pipeline.demo.library import encode

    published = publish_and_pull(library.snapshot, tmp_path)
    v1 = published.version
    v2 = publish_snapshot(rebuilt_copy(published.served, tmp_path / "v2"), published.bucket).version
    pull_version(published.bucket, published.served, version=v1)
    rng = random.Random(15)
    clips: list[tuple[bytes, str, float]] = []
    for f in scan_media(library.media).files:
        samples = decode(f.path, sample_rate=SAMPLE_RATE)
        start = rng.uniform(1.0, 14.0)
        piece = samples[int(start * SAMPLE_RATE) : int((start + CLIP_S) * SAMPLE_RATE)]
        path = encode(piece, tmp_path / f"{f.episode_id}.mp3", sample_rate=SAMPLE_RATE)
        clips.append((path.read_bytes(), f.episode_id, start))

    with running_server(published.served, "--poll", "0.5", "--workers", "2",
                        log=tmp_path / "serve.log") as server:  # fmt: skip
        tally = Tally()
        stop = threading.Event()

        def client(seed: int) -> None:
            pick = random.Random(seed)
            http = server.client()
            while not stop.is_set():
                data, episode, start = pick.choice(clips)
                for attempt in (1, 2):
                    try:
                        r = http.post("/match", files={"file": ("soak.mp3", data)})
                        break
                    except httpx.TransportError as exc:  # the killed worker's connection
                        http.close()
                        http = server.client()
                        if attempt == 2:
                            with tally.lock:
                                tally.failed.append(f"transport error after a retry: {exc!r}")
                            r = None
                        else:
                            with tally.lock:
                                tally.retried += 1
                with tally.lock:
                    tally.requests += 1
                    if r is None:
                        continue
                    if r.status_code != 200:
                        tally.failed.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    best = (r.json()["matches"] or [{}])[0]
                    if best.get("episode_id") == episode and abs(best["offset_s"] - start) < 0.5:
                        tally.right += 1
                    else:
                        tally.wrong.append(f"{episode}@{start:.2f}: {r.text[:200]}")
            http.close()

        def version_now() -> str:
            with server.client() as http:
                return str(http.get("/healthz").json()["version"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        started = time.monotonic()
        swaps, killed, versions = 0, None, {v1}
        try:
            next_swap = started + SWAP_EVERY_S
            while (now := time.monotonic()) - started < SOAK_S:
                if killed is None and now - started >= SOAK_S / 2:
                    with server.client() as http:
                        killed = int(http.get("/readyz").json()["worker_pid"])
                    os.kill(killed, signal.SIGKILL)
                if now >= next_swap:
                    target = v2 if swaps % 2 == 0 else v1
                    pull_version(published.bucket, published.served, version=target)
                    swaps += 1
                    next_swap += SWAP_EVERY_S
                    # Served within a few polls (by the worker that answers /healthz).
                    assert wait_until(lambda t=target: version_now() == t, timeout_s=8), target
                    versions.add(target)
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        # gunicorn put a new worker in place of the killed one: master and two workers.
        replaced = wait_until(
            lambda: killed not in (p := session_pids(server.proc.pid)) and len(p) == 3,
            timeout_s=30,
        )
        log = server.log_text()

    assert killed is not None and replaced
    assert swaps >= 2 and versions == {v1, v2}
    assert tally.failed == [], tally.failed[:5]
    assert tally.wrong == [], tally.wrong[:5]
    assert tally.requests > 20 * CLIENTS and tally.right == tally.requests
    assert "Traceback" not in log
    fault_figures.add("serve soak", f"{SOAK_S:g} s, {CLIENTS} clients, 2 workers",
                      requests=tally.requests, swaps=swaps, workers_killed=1,
                      retried_after_the_kill=tally.retried, failed=len(tally.failed),
                      wrong=len(tally.wrong))  # fmt: skip
