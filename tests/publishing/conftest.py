"""Fixtures for publishing: real shards built from generated audio, and buckets of both kinds
(a local folder, and a bucket on the session's real SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.blobstore import BlobStore, LocalBlobStore, S3BlobStore, S3Settings
from citywok_pipeline.fingerprint import DEFAULT_PARAMS, Episode, fingerprint
from citywok_pipeline.snapshot import shard_path, write_shard
from tests.conftest import S3Server, tone_music

EPISODE_S = 12.0


def build_season(snapshot_dir: Path, season: str, seeds: tuple[int, ...]) -> list[np.ndarray]:
    """Write one season shard of ``len(seeds)`` generated episodes; their audio."""
    audio = [tone_music(EPISODE_S, s) for s in seeds]
    episodes = [
        Episode(
            episode_id=f"{season}e{i + 1:02d}", season=season, show=season.split("-")[0],
            source=f"{season}/e{i + 1}.mp3", duration_s=EPISODE_S, sha256=f"{seed:064d}",
        )
        for i, seed in enumerate(seeds)
    ]  # fmt: skip
    write_shard(
        shard_path(snapshot_dir, season),
        season=season,
        episodes=episodes,
        hashes=[fingerprint(x, params=DEFAULT_PARAMS) for x in audio],
        params=DEFAULT_PARAMS,
        extra={"videos": {e.episode_id: f"dv-{e.sha256[-4:]}" for e in episodes}},
    )
    return audio


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    """Two seasons of two episodes each."""
    d = tmp_path / "snapshot"
    build_season(d, "alpha-s01", (1, 2))
    build_season(d, "beta-s01", (3, 4))
    return d


def s3_settings(seaweedfs: S3Server) -> S3Settings:
    return S3Settings(
        endpoint_url=seaweedfs.endpoint_url,
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
    )


def s3_bucket_for(seaweedfs: S3Server, name: str, **kwargs: int) -> S3BlobStore:
    return S3BlobStore(f"s3://{name}/citywok", s3_settings(seaweedfs), **kwargs)


@pytest.fixture(params=["local", "seaweedfs"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """A fresh bucket: a local folder, or a prefix of a new bucket on real SeaweedFS."""
    if request.param == "local":
        return LocalBlobStore(tmp_path / "bucket")
    return s3_bucket_for(request.getfixturevalue("seaweedfs"), request.getfixturevalue("s3_bucket"))
