"""A simulated large snapshot: postings generated directly, not from audio.

Keys are drawn from the empirical key distribution of real fingerprints (so posting-list
lengths are realistic: low-frequency keys are far more common than uniform keys would be),
anchor frames uniformly over each episode, at the real corpus' hash density.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from citywok_pipeline.fingerprint import DEFAULT_PARAMS, Episode, Hashes
from citywok_pipeline.snapshot import shard_path, write_shard


def simulate_snapshot(
    out: Path,
    *,
    hours: float,
    key_sample: np.ndarray,
    hashes_per_second: float,
    hours_per_shard: float = 10.0,
    episode_minutes: float = 30.0,
    seed: int = 0,
    log=print,
) -> dict:
    """Write ``hours`` of simulated shards into ``out``; return counts and timings."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    params = DEFAULT_PARAMS
    n_shards = int(np.ceil(hours / hours_per_shard))
    eps_per_shard = round(hours_per_shard * 60 / episode_minutes)
    frames_per_ep = int(episode_minutes * 60 / params.frame_seconds)
    per_ep = int(hashes_per_second * episode_minutes * 60)
    t0 = time.perf_counter()
    for s in range(n_shards):
        season = f"sim-{s:04d}-s01"
        path = shard_path(out, season)
        if path.exists():
            continue
        episodes, hashes = [], []
        for e in range(eps_per_shard):
            keys = key_sample[rng.integers(0, key_sample.size, per_ep)]
            frames = rng.integers(0, frames_per_ep, per_ep).astype(np.float32)
            episodes.append(
                Episode(
                    episode_id=f"{season}e{e + 1:02d}",
                    season=season,
                    show=f"sim {s}",
                    source=f"sim/{season}/{e + 1}.mkv",
                    duration_s=episode_minutes * 60,
                )
            )
            hashes.append(Hashes(keys, frames))
        write_shard(path, season=season, episodes=episodes, hashes=hashes, params=params)
        if s % 10 == 0:
            log(f"  simulated shard {s + 1}/{n_shards} ({time.perf_counter() - t0:.0f} s)")
    return {
        "shards": n_shards,
        "hours": n_shards * hours_per_shard,
        "build_s": time.perf_counter() - t0,
    }
