"""A simulated large snapshot: postings generated directly, not from audio.

Keys are drawn field by field from the empirical distributions of real fingerprints: anchor
frequency, frequency step and time step, each from its own marginal. Posting-list lengths are
then realistic (low frequencies and short steps are far more common than uniform keys would
make them) while the keys still spread over the whole key space; resampling whole keys from a
small corpus would only ever produce the corpus' own keys and make every list far too long.
Anchor frames are uniform over each episode, at the real corpus' hash density.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from citywok_pipeline.fingerprint import DEFAULT_PARAMS, Episode, Hashes, pack, unpack
from citywok_pipeline.snapshot import shard_path, write_shard


def _draw_keys(sample: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    f1, f2, dt = (x.astype(np.int64) for x in unpack(sample))
    a = f1[rng.integers(0, f1.size, n)]
    step = (f2 - f1)[rng.integers(0, f1.size, n)]
    b = np.clip(a + step, 0, 255)
    return pack(a, b, dt[rng.integers(0, f1.size, n)])


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
    built = 0
    for s in range(n_shards):
        season = f"sim-{s:04d}-s01"
        path = shard_path(out, season)
        if path.exists():
            continue
        built += 1
        episodes, hashes = [], []
        for e in range(eps_per_shard):
            keys = _draw_keys(key_sample, per_ep, rng)
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
        "shards_built": built,
    }
