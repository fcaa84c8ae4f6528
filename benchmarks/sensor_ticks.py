"""How long the YouTube sensors' ticks take on a large channel (the daemon's default sensor
timeout is 60 s; the target is well under 10 s).

    python -m benchmarks.sensor_ticks [--videos 500]

A channel of N videos served locally in YouTube's formats (tests/youtube/server.py), a real
SQLite instance and catalog: the uploads sensor's first tick, the listing job (yt-dlp lists the
whole channel and stores it), then 5 ticks each of youtube_channel_sync_sensor (which only
reads the stored listing) and youtube_uploads_sensor, evaluated as the daemon would. Then
the demo library (``generate_library``'s defaults: 6 episodes): media_scan_sensor's first
tick (every file new) and the next ones, and season_snapshot_sensor's. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def demo_ticks(rounds: int) -> dict[str, list[float]]:
    """Tick times of the media and season sensors on a fresh demo library and instance."""
    from citywok_pipeline.definitions import build_definitions, resources_for
    from citywok_pipeline.demo.library import generate_library
    from citywok_pipeline.embedded import evaluate_sensor
    from tests.pipeline.conftest import sqlite_instance

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_library(root / "media")
        env = {"CITYWOK_HOME": str(root / "home"), "CITYWOK_MEDIA_ROOT": str(root / "media")}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        instance = sqlite_instance(root / "dagster")
        try:
            defs = build_definitions(resources_for(env))
            out: dict[str, list[float]] = {}
            for i in range(rounds):
                for name in ("media_scan_sensor", "season_snapshot_sensor"):
                    start = time.perf_counter()
                    result = evaluate_sensor(defs, instance, name)
                    out.setdefault(name, []).append(round(time.perf_counter() - start, 3))
                    if i == 0 and name == "media_scan_sensor":
                        for req in result.dynamic_partitions_requests or []:
                            instance.add_dynamic_partitions(
                                req.partitions_def_name,  # type: ignore[union-attr]
                                list(req.partition_keys),  # type: ignore[union-attr]
                            )
        finally:
            instance.dispose()
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    from tests.pipeline.test_youtube_sensors import CHANNEL, Tick, video
    from tests.youtube.server import serve_local_youtube

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=500, help="videos on the channel")
    parser.add_argument("--ticks", type=int, default=5, help="ticks timed per sensor")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, serve_local_youtube() as yt:
        yt.add_channel(CHANNEL, "Night Kitchen", [video(i) for i in range(args.videos)])
        tick = Tick(Path(tmp), yt)
        try:
            start = time.perf_counter()
            tick()
            out: dict[str, object] = {
                "videos": args.videos,
                "uploads_first_tick_s": round(time.perf_counter() - start, 3),
            }
            start = time.perf_counter()
            listed = tick.list_channels()
            out["listing_job_s"] = round(time.perf_counter() - start, 2)
            if not listed.success:
                print("the listing job failed", file=sys.stderr)
                return 1
            for name in ("youtube_channel_sync_sensor", "youtube_uploads_sensor"):
                times = []
                for _ in range(args.ticks):
                    start = time.perf_counter()
                    tick(name)
                    times.append(time.perf_counter() - start)
                out[name] = {
                    "median_s": round(statistics.median(times), 3),
                    "max_s": round(max(times), 3),
                }
        finally:
            tick.instance.dispose()
    out["demo_library"] = demo_ticks(args.ticks)
    out["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
