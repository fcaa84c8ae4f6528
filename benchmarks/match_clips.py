"""One checkout's side of a benchmark that compares two versions of the matcher.

Run as a script (not ``-m``) with ``PYTHONPATH`` at the checkout to measure: it imports only
that checkout's package (``citywok_pipeline``) and, for ``simulate``, its ``benchmarks.simulate``,
so the previous code (a temporary ``git worktree``, see :mod:`benchmarks.accuracy`) and the new
code run the same clips through the same script.

    python benchmarks/match_clips.py index MEDIA SNAPSHOT
    python benchmarks/match_clips.py simulate SNAPSHOT SIM_DIR --hours 1000
    python benchmarks/match_clips.py match SNAPSHOT CLIPS.npz OUT.json [--warmup N]
    python benchmarks/match_clips.py indexing MEDIA

Each prints one JSON object on stdout. A clips file holds ``samples`` (every clip, float32 at
``sample_rate``, one after another) and ``bounds`` (where each begins and ends); ``match``
writes one record per clip in that order: the best match's source, offset, speed, pitch and
tempo, every source named, ``ambiguous``, the passes run, and the time ``match_samples`` took.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _signature() -> str:
    """What a shard written by this checkout depends on: another checkout with the same
    signature reads its shards."""
    from citywok_pipeline.fingerprint import DEFAULT_PARAMS
    from citywok_pipeline.snapshot import FORMAT_VERSION

    return f"format {FORMAT_VERSION}, {DEFAULT_PARAMS!r}"


def cmd_index(args) -> dict:
    from citywok_pipeline.indexer import index_library
    from citywok_pipeline.snapshot import Snapshot

    t0 = time.perf_counter()
    index_library(args.media, args.snapshot)
    wall = time.perf_counter() - t0
    with Snapshot.open(args.snapshot) as snap:
        info = snap.info()
    return {
        "signature": _signature(),
        "index_wall_s": wall,
        "episodes": info["episodes"],
        "hours": info["hours"],
        "postings": info["postings"],
        "bytes": info["bytes"],
        "bytes_per_hour": info["bytes_per_hour"],
    }


def cmd_simulate(args) -> dict:
    from benchmarks.simulate import simulate_snapshot
    from citywok_pipeline.snapshot import Snapshot

    with Snapshot.open(args.snapshot) as snap:
        keys = np.concatenate([s.postings.posting_keys() for s in snap.shards])
        density = keys.size / sum(e.duration_s for e in snap.episodes)
    built = simulate_snapshot(
        args.sim,
        hours=args.hours,
        key_sample=keys,
        hashes_per_second=density,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    return {"signature": _signature(), "hashes_per_second": density, **built}


def cmd_match(args) -> dict:
    from citywok_pipeline.fingerprint import match_samples
    from citywok_pipeline.snapshot import Snapshot

    clips = np.load(args.clips)
    samples, bounds, rate = clips["samples"], clips["bounds"], int(clips["sample_rate"])
    t0 = time.perf_counter()
    snap = Snapshot.open(args.snapshot)
    open_ms = 1e3 * (time.perf_counter() - t0)
    if snap.params.sample_rate != rate:
        raise SystemExit(
            f"{args.clips}: clips at {rate} Hz, the snapshot's fingerprints at "
            f"{snap.params.sample_rate} Hz"
        )
    before = _rss_mib()
    # The first queries fault the touched pages of the shards in: run a few, untimed.
    for i in range(min(args.warmup, len(bounds))):
        match_samples(samples[bounds[i, 0] : bounds[i, 1]], snap)
    records = []
    for lo, hi in bounds:
        q = samples[lo:hi]
        c0 = time.thread_time()
        t0 = time.perf_counter()
        r = match_samples(q, snap)
        wall = time.perf_counter() - t0
        cpu = time.thread_time() - c0
        best = r.matches[0] if r.matches else None
        records.append(
            {
                "source": best.source if best else None,
                "offset_s": best.offset_s if best else None,
                "confidence": best.confidence if best else None,
                "speed": getattr(best, "speed", 1.0) if best else None,
                "pitch": getattr(best, "pitch", 0.0) if best else None,
                "tempo": getattr(best, "tempo", 1.0) if best else None,
                "named": sorted({m.source for m in r.matches}),
                "ambiguous": bool(r.ambiguous),
                "passes": len(getattr(r, "passes", ()) or ()),
                "ms": 1e3 * wall,
                "cpu_ms": 1e3 * cpu,
            }
        )
    after = _rss_mib()
    stacked = getattr(snap, "stacked", None)
    stacked_mib = stacked().nbytes / 2**20 if callable(stacked) else None
    info = snap.info()
    snap.close()
    Path(args.out).write_text(json.dumps(records) + "\n")
    return {
        "clips": len(records),
        "open_ms": open_ms,
        "shards": len(info["shards"]),
        "hours": info["hours"],
        "rss_mib_before_queries": before,
        "rss_mib_after_queries": after,
        "stacked_bitmaps_mib": stacked_mib,
    }


def cmd_indexing(args) -> dict:
    """x realtime per core of decode + fingerprint + sha256 (``process_file``), against
    decode alone, CPU time of this process and its ffmpeg children."""
    from citywok_pipeline.fingerprint import DEFAULT_PARAMS
    from citywok_pipeline.fingerprint.audio import decode
    from citywok_pipeline.indexer import process_file
    from citywok_pipeline.library import scan_media

    files = scan_media(args.media).files

    def cpu() -> float:
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + c.ru_utime + c.ru_stime

    audio_s = 0.0
    t0 = cpu()
    for f in files:
        audio_s += decode(f.path, sample_rate=DEFAULT_PARAMS.sample_rate).size
    audio_s /= DEFAULT_PARAMS.sample_rate
    decode_cpu = cpu() - t0
    t0 = cpu()
    for f in files:
        process_file(f.path, DEFAULT_PARAMS)
    full_cpu = cpu() - t0
    return {
        "files": len(files),
        "audio_s": audio_s,
        "decode_only_x_per_core": audio_s / decode_cpu,
        "index_x_per_core": audio_s / full_cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("index")
    p.add_argument("media", type=Path)
    p.add_argument("snapshot", type=Path)
    p = sub.add_parser("simulate")
    p.add_argument("snapshot", type=Path)
    p.add_argument("sim", type=Path)
    p.add_argument("--hours", type=float, default=1000.0)
    p = sub.add_parser("match")
    p.add_argument("snapshot", type=Path)
    p.add_argument("clips", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--warmup", type=int, default=0)
    p = sub.add_parser("indexing")
    p.add_argument("media", type=Path)
    args = ap.parse_args()
    run = {"index": cmd_index, "simulate": cmd_simulate, "match": cmd_match}
    run["indexing"] = cmd_indexing
    print(json.dumps(run[args.cmd](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
