"""Pulling versions to local disk: only missing shards, sha256 checks, an atomic switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citywok_pipeline.blobstore import BlobStore, LocalBlobStore, S3BlobStore
from citywok_pipeline.publishing import (
    IntegrityError,
    PullError,
    current_version,
    publish_snapshot,
    pull_version,
    read_manifest,
    resolve_snapshot_dir,
)
from citywok_pipeline.snapshot import Snapshot

from .conftest import build_season


def overwrite(bucket: BlobStore, key: str, data: bytes) -> None:
    """Replace an object behind the publisher's back (what bit rot or a bad copy would do)."""
    if isinstance(bucket, S3BlobStore):
        bucket.client.put_object(Bucket=bucket.bucket, Key=bucket._object(key), Body=data)
    else:
        assert isinstance(bucket, LocalBlobStore)
        Path(bucket.uri(key).removeprefix("file://")).write_bytes(data)


def test_a_pull_fetches_latest_and_switches_current_to_it(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
) -> None:
    published = publish_snapshot(snapshot_dir, bucket)
    pulled = pull_version(bucket, tmp_path / "served")
    assert pulled.version == published.version and pulled.switched
    assert sorted(pulled.downloaded) == ["alpha-s01.lmdb", "beta-s01.lmdb"]
    assert os.readlink(tmp_path / "served" / "current") == f"versions/{published.version}"
    assert current_version(tmp_path / "served") == published.version
    with Snapshot.open(resolve_snapshot_dir(tmp_path / "served")) as snap:
        assert len(snap.episodes) == 4


def test_a_second_pull_downloads_only_the_changed_shard(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    pull_version(bucket, tmp_path / "served")
    build_season(snapshot_dir, "beta-s01", (3, 30))
    second = publish_snapshot(snapshot_dir, bucket)
    pulled = pull_version(bucket, tmp_path / "served")
    assert pulled.version == second.version
    assert pulled.downloaded == ("beta-s01.lmdb",) and pulled.reused == ("alpha-s01.lmdb",)
    # Both versions stay side by side; an older one can be pulled back without a download.
    back = pull_version(bucket, tmp_path / "served", version=first.version)
    assert back.downloaded == () and current_version(tmp_path / "served") == first.version


def test_a_pull_rejects_a_bit_flipped_shard_and_keeps_the_previous_version(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    pull_version(bucket, tmp_path / "served")
    build_season(snapshot_dir, "beta-s01", (3, 31))
    second = publish_snapshot(snapshot_dir, bucket)
    changed = next(s for s in read_manifest(bucket, second.version).shards
                   if s.season == "beta-s01")  # fmt: skip
    data = bytearray((snapshot_dir / "beta-s01.lmdb").read_bytes())
    data[len(data) // 3] ^= 0x01
    overwrite(bucket, changed.key, bytes(data))

    with pytest.raises(IntegrityError, match=r"beta-s01\.lmdb.*sha256.*rejected"):
        pull_version(bucket, tmp_path / "served")
    assert current_version(tmp_path / "served") == first.version
    assert not (tmp_path / "served" / "versions" / second.version).exists()
    assert [p.name for p in (tmp_path / "served" / "versions").iterdir()] == [first.version]


def test_a_pull_rejects_a_truncated_shard(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
) -> None:
    published = publish_snapshot(snapshot_dir, bucket)
    shard = read_manifest(bucket, published.version).shards[0]
    overwrite(bucket, shard.key, (snapshot_dir / shard.file).read_bytes()[: shard.size // 2])
    with pytest.raises(IntegrityError, match="corrupted or truncated"):
        pull_version(bucket, tmp_path / "served")
    assert current_version(tmp_path / "served") is None


def test_pulling_from_an_empty_bucket_or_an_unknown_version_is_a_clear_error(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(PullError, match="nothing published"):
        pull_version(bucket, tmp_path / "served")
    publish_snapshot(snapshot_dir, bucket)
    unknown = "v20000101T000000000000Z-00000000"
    with pytest.raises(PullError, match=rf"no version '{unknown}'.*there are: v"):
        pull_version(bucket, tmp_path / "served", version=unknown)


def test_old_local_versions_beyond_keep_are_deleted_but_never_the_current_one(
    snapshot_dir: Path, tmp_path: Path
) -> None:
    bucket = LocalBlobStore(tmp_path / "bucket")
    versions = []
    for seed in (40, 41, 42):
        build_season(snapshot_dir, "beta-s01", (3, seed))
        versions.append(publish_snapshot(snapshot_dir, bucket).version)
        pull_version(bucket, tmp_path / "served", keep_local=2)
    local = sorted(p.name for p in (tmp_path / "served" / "versions").iterdir())
    assert local == versions[1:]
    # Rolled back to an older one with keep=1: the newest stays, and so does the current one.
    pull_version(bucket, tmp_path / "served", version=versions[1], keep_local=1)
    local = sorted(p.name for p in (tmp_path / "served" / "versions").iterdir())
    assert local == versions[1:] and current_version(tmp_path / "served") == versions[1]


def test_a_pull_removes_the_staging_folders_and_links_a_killed_pull_left(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
) -> None:
    publish_snapshot(snapshot_dir, bucket)
    served = tmp_path / "served"
    staging = served / "versions" / ".v20261122T101500123456Z-1a2b3c4d.0f0f0f0f.tmp"
    staging.mkdir(parents=True)
    (staging / "alpha-s01.lmdb").write_bytes(b"half a download")
    os.symlink("versions/nowhere", served / ".current.0f0f0f0f")
    pull_version(bucket, served)
    assert sorted(p.name for p in served.iterdir()) == [".pull.lock", "current", "versions"]
    assert [p.name for p in (served / "versions").iterdir() if p.name.startswith(".")] == []
