"""Serving speed: start to first answer, POST /match under concurrent load, version pickup.

``python -m benchmarks.serve [--hours 1000] [--clients 8] [--seconds 20]``

- The snapshot is the benchmark corpus (benchmarks/.data/corpus, built by benchmarks.run /
  benchmarks.accuracy), plus ``--hours`` of simulated shards (benchmarks/.data/sim-<H>h, built
  once: minutes for 1,000 h), published to a local bucket and pulled into a served directory.
- ``citywok serve`` runs as its own process; the load comes from another process: ``--clients``
  threads each posting 5 s mp3 clips of real corpus episodes back to back.
- Start to first answer: from spawning ``citywok serve`` to the first successful POST /match.
- Version pickup: a new version is published and pulled while the load runs; the time from the
  switch of DIR/current to /healthz naming it (poll interval 0.2 s), and the failed requests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.publishing import LocalBucket, publish_snapshot, pull_version
from citywok_pipeline.snapshot import Snapshot, shard_paths, write_shard

DATA = Path(__file__).parent / ".data"
CITYWOK = Path(sys.executable).parent / "citywok"
CLIP_S = 5.0
SR = 16000


def snapshot_dir(hours: float) -> Path:
    corpus = DATA / "corpus" / "snapshot"
    if not shard_paths(corpus):
        sys.exit("no benchmark corpus: run `python -m benchmarks.run` once to build it")
    if not hours:
        return corpus
    from .simulate import simulate_snapshot

    sim = DATA / f"sim-{int(hours)}h"
    with Snapshot.open(corpus) as snap:
        keys = np.concatenate([s.postings.posting_keys() for s in snap.shards])
        density = keys.size / sum(e.duration_s for e in snap.episodes)
    simulate_snapshot(sim, hours=hours, key_sample=keys, hashes_per_second=density)
    for p in shard_paths(corpus):
        if not (sim / p.name).exists():
            shutil.copy2(p, sim / p.name)
    return sim


def make_clips(out: Path, n: int = 16) -> list[tuple[str, bytes, str]]:
    """5 s mp3 clips of corpus episodes: (name, bytes, true episode id)."""
    rng = np.random.default_rng(7)
    with Snapshot.open(DATA / "corpus" / "snapshot") as snap:
        episodes = [(e.episode_id, e.source, e.duration_s) for e in snap.episodes]
    media = DATA / "corpus" / "media"
    clips = []
    for i in range(n):
        eid, source, dur = episodes[rng.integers(len(episodes))]
        start = float(rng.uniform(0, max(dur - CLIP_S, 0.1)))
        path = out / f"clip{i}.mp3"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-ss", f"{start:.2f}", "-t", str(CLIP_S),
             "-i", str(media / source), "-ac", "1", str(path)],
            check=True,
        )  # fmt: skip
        assert decode(path, sample_rate=SR).size > 0
        clips.append((path.name, path.read_bytes(), eid))
    return clips


def _client(url: str, clips: list, stop_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    lat, failed, right = [], 0, 0
    with httpx.Client(base_url=url, timeout=60) as http:
        i = 0
        while time.time() < stop_at:
            name, data, eid = clips[i % len(clips)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = http.post("/match", files={"file": (name, data, "audio/mpeg")})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t0)
            if not ok:
                failed += 1
            elif r.json()["matches"] and r.json()["matches"][0]["episode_id"] == eid:
                right += 1
    out.put((lat, failed, right))


def _load(url: str, clips: list, clients: int, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """The load generator process: ``clients`` threads posting clips back to back."""
    import threading

    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    stop_at = time.time() + seconds
    threads = [
        threading.Thread(target=_client, args=(url, clips, stop_at, q)) for _ in range(clients)
    ]
    for t in threads:
        t.start()
    results = [q.get() for _ in threads]
    for t in threads:
        t.join()
    lat = [x for r in results for x in r[0]]
    out.put({"latencies": lat, "failed": sum(r[1] for r in results),
             "right": sum(r[2] for r in results), "seconds": seconds})  # fmt: skip


def summarise(load: dict) -> dict:
    lat = np.array(load["latencies"]) * 1e3
    return {
        "requests": int(lat.size),
        "failed": load["failed"],
        "right_episode": load["right"],
        "requests_per_s": round(lat.size / load["seconds"], 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=0, help="simulated hours added (0: corpus)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()

    snap = snapshot_dir(args.hours)
    work = Path(tempfile.mkdtemp(prefix="citywok-serve-bench-"))
    try:
        bucket = LocalBucket(work / "bucket")
        t0 = time.perf_counter()
        publish_snapshot(snap, bucket)
        pull_version(bucket, work / "served")
        publish_pull_s = time.perf_counter() - t0
        with Snapshot.open(snap) as s:
            hours = round(sum(e.duration_s for e in s.episodes) / 3600, 1)
        clips = make_clips(work)
        url = f"http://127.0.0.1:{args.port}"
        # Start to first answer.
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(CITYWOK), "serve", str(work / "served"), "--port", str(args.port),
             "--poll", "0.2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            name, data, _ = clips[0]
            while True:
                try:
                    r = httpx.post(f"{url}/match", files={"file": (name, data)}, timeout=30)
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.02)
            first_answer_s = time.perf_counter() - t0
            # Steady load.
            out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
            p = mp.Process(target=_load, args=(url, clips, args.clients, args.seconds, out))
            p.start()
            steady = summarise(out.get())
            p.join()
            # Load with a version swap in the middle.
            p = mp.Process(target=_load, args=(url, clips, args.clients, 10.0, out))
            p.start()
            time.sleep(3)
            # v2: the served version with one shard rebuilt (same postings, a new build time).
            staging = work / "v2"
            shutil.copytree(work / "served" / "current", staging)
            (staging / "manifest.json").unlink()
            first_shard = shard_paths(staging)[0]
            with Snapshot.open(staging) as s2:
                shard = s2.shards[0]
                eps, season, params = shard.episodes, shard.season, s2.params
                hashes = [shard.postings.episode_hashes(i) for i in range(len(eps))]
            write_shard(first_shard, season=season, episodes=eps, hashes=hashes, params=params,
                        extra={"rebuilt_for": "benchmark"})  # fmt: skip
            v2 = publish_snapshot(staging, bucket).version
            pull_version(bucket, work / "served")
            t_switch = time.perf_counter()
            while httpx.get(f"{url}/healthz").json()["version"] != v2:
                time.sleep(0.01)
            pickup_s = time.perf_counter() - t_switch
            swap = summarise(out.get())
            p.join()
        finally:
            proc.terminate()
            proc.wait(10)
        result = {
            "snapshot_hours": hours,
            "shards": len(shard_paths(snap)),
            "publish_and_pull_s": round(publish_pull_s, 2),
            "start_to_first_answer_s": round(first_answer_s, 2),
            "clients": args.clients,
            "steady": steady,
            "version_pickup_s": round(pickup_s, 3),
            "during_swap": swap,
            "cpu_count": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
