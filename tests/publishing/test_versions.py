"""Publishing versions to a local folder and to a real S3 server (SeaweedFS), and retention."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from citywok_pipeline.publishing import (
    Bucket,
    PreconditionFailedError,
    PublishConflictError,
    PublishError,
    list_versions,
    prune_versions,
    publish_snapshot,
    pull_version,
    read_latest,
    read_manifest,
)
from citywok_pipeline.publishing.bucket import LocalBucket
from tests.conftest import S3Server

from .conftest import build_season, s3_bucket_for


def blob_keys(bucket: Bucket) -> set[str]:
    return {o.key for o in bucket.list("blobs/")}


def test_a_first_publish_uploads_every_shard_writes_a_manifest_and_moves_latest(
    bucket: Bucket, snapshot_dir: Path
) -> None:
    result = publish_snapshot(snapshot_dir, bucket)
    assert result.created and sorted(result.uploaded) == ["alpha-s01.lmdb", "beta-s01.lmdb"]
    latest = read_latest(bucket)
    assert latest is not None and latest.version == result.version
    manifest = read_manifest(bucket, result.version)
    assert {s.season for s in manifest.shards} == {"alpha-s01", "beta-s01"}
    assert blob_keys(bucket) == {s.key for s in manifest.shards}
    alpha = next(s for s in manifest.shards if s.season == "alpha-s01")
    assert alpha.episodes == 2 and alpha.postings > 0 and alpha.size > 0
    assert alpha.videos == {"alpha-s01e01": "dv-0001", "alpha-s01e02": "dv-0002"}
    raw = json.loads(bucket.read(f"versions/{result.version}.json").data)
    assert raw["params"]["sample_rate"] > 0 and raw["code_version"]["package"]
    assert raw["totals"]["episodes"] == 4


def test_publishing_an_unchanged_snapshot_creates_no_new_version(
    bucket: Bucket, snapshot_dir: Path
) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    again = publish_snapshot(snapshot_dir, bucket)
    assert not again.created and again.version == first.version and again.uploaded == ()
    assert list_versions(bucket) == [first.version]


def test_changing_one_season_uploads_only_that_shard(bucket: Bucket, snapshot_dir: Path) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    build_season(snapshot_dir, "beta-s01", (3, 5))
    second = publish_snapshot(snapshot_dir, bucket)
    assert second.created and second.version > first.version
    assert second.uploaded == ("beta-s01.lmdb",) and second.reused == ("alpha-s01.lmdb",)
    assert read_manifest(bucket, second.version).previous == first.version
    assert read_latest(bucket).version == second.version  # type: ignore[union-attr]
    assert len(blob_keys(bucket)) == 3


class Wrapped(Bucket):
    """A real bucket seen through a wrapper that can pause or fail at one step."""

    def __init__(self, inner: Bucket) -> None:
        self.inner, self.url = inner, inner.url

    def read(self, key: str) -> Any:
        return self.inner.read(key)

    def download(self, key: str, out: Any) -> None:
        self.inner.download(key, out)

    def put_new(self, key: str, source: Any) -> bool:
        return self.inner.put_new(key, source)

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        return self.inner.replace(key, data, if_match=if_match)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Any:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


class PausingBucket(Wrapped):
    """Freezes a publisher just before it moves latest.json, so another can overtake it."""

    def __init__(self, inner: Bucket) -> None:
        super().__init__(inner)
        self.reached, self.go = threading.Event(), threading.Event()

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        self.reached.set()
        assert self.go.wait(30)
        return self.inner.replace(key, data, if_match=if_match)


def test_of_two_racing_publishers_one_wins_and_latest_names_a_complete_manifest(
    bucket: Bucket, snapshot_dir: Path, tmp_path: Path
) -> None:
    base = publish_snapshot(snapshot_dir, bucket)
    other = tmp_path / "other"
    build_season(other, "alpha-s01", (1, 2))
    build_season(other, "gamma-s01", (7, 8))
    build_season(snapshot_dir, "beta-s01", (3, 9))

    slow = PausingBucket(bucket)
    outcome: dict[str, object] = {}

    def publish_slowly() -> None:
        try:
            outcome["slow"] = publish_snapshot(snapshot_dir, slow)
        except PublishConflictError as exc:
            outcome["slow"] = exc

    t = threading.Thread(target=publish_slowly)
    t.start()
    assert slow.reached.wait(30)
    fast = publish_snapshot(other, bucket)  # overtakes while the slow one is paused
    slow.go.set()
    t.join(30)

    assert isinstance(outcome["slow"], PublishConflictError)
    assert fast.version in str(outcome["slow"]) and "not made latest" in str(outcome["slow"])
    latest = read_latest(bucket)
    assert latest is not None and latest.version == fast.version != base.version
    for shard in read_manifest(bucket, latest.version).shards:
        assert bucket.exists(shard.key)


def test_a_stale_etag_cannot_move_latest(bucket: Bucket, snapshot_dir: Path) -> None:
    publish_snapshot(snapshot_dir, bucket)
    stale = read_latest(bucket)
    build_season(snapshot_dir, "beta-s01", (3, 6))
    publish_snapshot(snapshot_dir, bucket)
    with pytest.raises(PreconditionFailedError, match=r"latest\.json"):
        bucket.replace("latest.json", b"{}", if_match=stale.etag)  # type: ignore[union-attr]
    with pytest.raises(PreconditionFailedError):
        bucket.replace("latest.json", b"{}", if_match=None)


class CrashingBucket(Wrapped):
    """Dies (as a killed process would: KeyboardInterrupt is not an Exception) after its
    first shard upload. Killing a real process at that exact point cannot be timed."""

    uploads = 0

    def put_new(self, key: str, source: Any) -> bool:
        if self.uploads == 1:
            raise KeyboardInterrupt("killed part-way through the upload")
        self.uploads += 1
        return self.inner.put_new(key, source)


def test_an_upload_killed_part_way_leaves_latest_unchanged(
    bucket: Bucket, snapshot_dir: Path
) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    build_season(snapshot_dir, "alpha-s01", (1, 10))
    build_season(snapshot_dir, "beta-s01", (3, 11))
    with pytest.raises(KeyboardInterrupt):
        publish_snapshot(snapshot_dir, CrashingBucket(bucket))
    assert read_latest(bucket).version == first.version  # type: ignore[union-attr]
    assert list_versions(bucket) == [first.version]
    # A later publish completes the job, reusing the blob that did get through.
    done = publish_snapshot(snapshot_dir, bucket)
    assert len(done.uploaded) == 1 and len(done.reused) == 1


def test_a_snapshot_that_fails_verification_is_not_published(
    bucket: Bucket, snapshot_dir: Path
) -> None:
    shard = snapshot_dir / "beta-s01.lmdb"
    data = bytearray(shard.read_bytes())
    for i in range(4096, len(data), 512):  # past the LMDB meta pages, through the data
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PublishError, match="beta-s01"):
        publish_snapshot(snapshot_dir, bucket)
    assert read_latest(bucket) is None


def test_retention_keeps_the_newest_versions_and_deletes_only_unreferenced_blobs(
    bucket: Bucket, snapshot_dir: Path
) -> None:
    versions = [publish_snapshot(snapshot_dir, bucket).version]
    for seed in (20, 21, 22):
        build_season(snapshot_dir, "beta-s01", (3, seed))
        versions.append(publish_snapshot(snapshot_dir, bucket).version)
    before = blob_keys(bucket)
    kept_keys = {s.key for v in versions[-2:] for s in read_manifest(bucket, v).shards}

    young = prune_versions(bucket, keep=2, grace_s=3600)
    assert set(young.deleted_versions) == set(versions[:2])
    assert young.deleted_blobs == ()  # unreferenced, but too young: maybe a publish in flight
    assert list_versions(bucket) == versions[-2:]
    result = prune_versions(bucket, keep=2, grace_s=0)

    assert result.kept == tuple(versions[-2:]) and result.deleted_versions == ()
    assert blob_keys(bucket) == kept_keys
    assert set(result.deleted_blobs) == before - kept_keys
    # The shared alpha shard is referenced by the kept versions and survives.
    assert any(s.season == "alpha-s01" and s.key in kept_keys
               for s in read_manifest(bucket, versions[-1]).shards)  # fmt: skip
    with pytest.raises(ValueError, match="keep"):
        prune_versions(bucket, keep=0)


def test_a_large_shard_goes_up_as_a_conditional_multipart_upload(
    seaweedfs: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    bucket = s3_bucket_for(seaweedfs, s3_bucket, multipart_threshold=5 << 20)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (45_000))  # 11.5 MB: three parts
    assert bucket.put_new("blobs/sha256/big", big)
    assert bucket.read("blobs/sha256/big").data == big.read_bytes()
    assert not bucket.put_new("blobs/sha256/big", big)


def test_a_local_bucket_refuses_a_url_that_is_not_a_folder(tmp_path: Path) -> None:
    from citywok_pipeline.publishing import BucketError, open_bucket

    assert isinstance(open_bucket((tmp_path / "b").as_uri()), LocalBucket)
    with pytest.raises(BucketError, match="ftp://x"):
        open_bucket("ftp://x")
    with pytest.raises(BucketError, match="s3://bucket/prefix"):
        open_bucket("s3:///nobucket")


class _PruneUnder(LocalBucket):
    """A local bucket on which something happens at a chosen moment of another operation,
    as when a prune and a publish run at once on two machines."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.before_manifest_put: Any = None  # called as a manifest is about to be written
        self.before_manifest_delete: Any = None

    def put_new(self, key: str, source: Any) -> bool:
        if key.startswith("versions/") and self.before_manifest_put:
            hook, self.before_manifest_put = self.before_manifest_put, None
            hook()
        return super().put_new(key, source)

    def delete(self, key: str) -> None:
        if key.startswith("versions/") and self.before_manifest_delete:
            hook, self.before_manifest_delete = self.before_manifest_delete, None
            hook()
        super().delete(key)


def test_a_reused_blob_pruned_during_a_publish_is_put_back_before_latest_moves(
    snapshot_dir: Path, tmp_path: Path
) -> None:
    bucket = _PruneUnder(tmp_path / "bucket")
    first = publish_snapshot(snapshot_dir, bucket)
    alpha = next(s for s in first.manifest.shards if s.season == "alpha-s01")
    build_season(snapshot_dir, "beta-s01", (3, 30))
    # A prune that never saw the new manifest deletes the alpha shard this publish reuses.
    bucket.before_manifest_put = lambda: bucket.delete(alpha.key)
    second = publish_snapshot(snapshot_dir, bucket)

    assert "alpha-s01.lmdb" in second.uploaded
    assert bucket.exists(alpha.key)
    assert read_latest(bucket).version == second.version  # type: ignore[union-attr]
    pulled = pull_version(bucket, tmp_path / "pulled")
    assert pulled.version == second.version


def test_a_version_published_during_a_prune_keeps_the_blobs_it_reuses(
    snapshot_dir: Path, tmp_path: Path
) -> None:
    bucket = _PruneUnder(tmp_path / "bucket")
    old = tmp_path / "old-snapshot"
    shutil.copytree(snapshot_dir, old)
    v1 = publish_snapshot(snapshot_dir, bucket).version
    build_season(snapshot_dir, "beta-s01", (3, 31))
    v2 = publish_snapshot(snapshot_dir, bucket).version
    # While the prune deletes v1 (keeping v2 only), v1's content is published again as v3:
    # its beta shard is referenced by no version the prune listed.
    published: list[str] = []
    bucket.before_manifest_delete = lambda: published.append(publish_snapshot(old, bucket).version)
    result = prune_versions(bucket, keep=1, grace_s=0)

    [v3] = published
    assert result.deleted_versions == (v1,) and v2 in result.kept
    assert all(bucket.exists(s.key) for s in read_manifest(bucket, v3).shards)
    assert pull_version(bucket, tmp_path / "pulled").version == v3
