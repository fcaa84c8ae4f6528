"""Publishing versions to a local folder and to a real S3 server (SeaweedFS), and retention."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from citywok_pipeline.blobstore import BlobStore, LocalBlobStore, PreconditionFailedError
from citywok_pipeline.publishing import (
    PruneBusyError,
    PublishConflictError,
    PublishError,
    list_versions,
    prune_versions,
    publish_snapshot,
    pull_version,
    read_latest,
    read_manifest,
)

from .conftest import build_season


def blob_keys(bucket: BlobStore) -> set[str]:
    return {o.key for o in bucket.list("blobs/")}


def test_a_first_publish_uploads_every_shard_writes_a_manifest_and_moves_latest(
    bucket: BlobStore, snapshot_dir: Path
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
    bucket: BlobStore, snapshot_dir: Path
) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    again = publish_snapshot(snapshot_dir, bucket)
    assert not again.created and again.version == first.version and again.uploaded == ()
    assert list_versions(bucket) == [first.version]


def test_changing_one_season_uploads_only_that_shard(bucket: BlobStore, snapshot_dir: Path) -> None:
    first = publish_snapshot(snapshot_dir, bucket)
    build_season(snapshot_dir, "beta-s01", (3, 5))
    second = publish_snapshot(snapshot_dir, bucket)
    assert second.created and second.version > first.version
    assert second.uploaded == ("beta-s01.lmdb",) and second.reused == ("alpha-s01.lmdb",)
    assert read_manifest(bucket, second.version).previous == first.version
    assert read_latest(bucket).version == second.version  # type: ignore[union-attr]
    assert len(blob_keys(bucket)) == 3


class Wrapped(BlobStore):
    """A real bucket seen through a wrapper that can pause or fail at one step."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner, self.url = inner, inner.url

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def read(self, key: str) -> Any:
        return self.inner.read(key)

    def put(self, key: str, source: Any) -> Any:
        return self.inner.put(key, source)

    def child(self, prefix: str) -> BlobStore:
        return Wrapped(self.inner.child(prefix))

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

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        self.reached, self.go = threading.Event(), threading.Event()

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        self.reached.set()
        assert self.go.wait(30)
        return self.inner.replace(key, data, if_match=if_match)


def test_of_two_racing_publishers_one_wins_and_latest_names_a_complete_manifest(
    bucket: BlobStore, snapshot_dir: Path, tmp_path: Path
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


def test_a_stale_etag_cannot_move_latest(bucket: BlobStore, snapshot_dir: Path) -> None:
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
    bucket: BlobStore, snapshot_dir: Path
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
    bucket: BlobStore, snapshot_dir: Path
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
    bucket: BlobStore, snapshot_dir: Path
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


class KilledBeforeLatest(Wrapped):
    """Dies (as a killed process would) as it is about to move latest.json: its manifest is
    written, and never becomes latest."""

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        raise KeyboardInterrupt("killed before moving latest.json")


def test_a_manifest_that_never_became_latest_is_not_counted_as_a_version(
    bucket: BlobStore, snapshot_dir: Path
) -> None:
    first = publish_snapshot(snapshot_dir, bucket).version
    build_season(snapshot_dir, "beta-s01", (3, 40))
    with pytest.raises(KeyboardInterrupt):
        publish_snapshot(snapshot_dir, KilledBeforeLatest(bucket))
    [orphan] = set(list_versions(bucket)) - {first}
    build_season(snapshot_dir, "beta-s01", (3, 41))
    second = publish_snapshot(snapshot_dir, bucket).version

    young = prune_versions(bucket, keep=2, grace_s=3600)  # its publisher may still move it
    assert young.kept == tuple(sorted({first, orphan, second})) and young.deleted_versions == ()
    result = prune_versions(bucket, keep=2, grace_s=0)
    assert result.kept == (first, second) and result.deleted_versions == (orphan,)
    assert list_versions(bucket) == [first, second]
    assert all(
        bucket.exists(s.key) for v in (first, second) for s in read_manifest(bucket, v).shards
    )


class _PruneUnder(LocalBlobStore):
    """A local bucket on which something happens at a chosen moment of another operation,
    as when a prune and a publish run at once on two machines."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.before_manifest_put: Any = None  # called as a manifest is about to be written
        self.before_manifest_delete: Any = None
        self.before_latest_moves: Any = None

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

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        if key == "latest.json" and self.before_latest_moves:
            hook, self.before_latest_moves = self.before_latest_moves, None
            hook()
        return super().replace(key, data, if_match=if_match)


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


def test_a_prune_just_before_a_publish_moves_latest_keeps_that_publishs_manifest(
    snapshot_dir: Path, tmp_path: Path
) -> None:
    """The race `make faults` found: with no grace, a prune that runs after a publish wrote its
    manifest and before it moved latest.json took the manifest for a dead publish's and deleted
    it, and latest.json then named a version that was gone."""
    bucket = _PruneUnder(tmp_path / "bucket")
    first = publish_snapshot(snapshot_dir, bucket).version
    build_season(snapshot_dir, "beta-s01", (3, 33))
    pruned: list[Any] = []
    bucket.before_latest_moves = lambda: pruned.append(prune_versions(bucket, keep=1, grace_s=0))
    second = publish_snapshot(snapshot_dir, bucket).version

    [during] = pruned
    assert second in during.kept and during.deleted_versions == ()
    assert read_latest(bucket).version == second  # type: ignore[union-attr]
    assert all(bucket.exists(s.key) for s in read_manifest(bucket, second).shards)
    assert pull_version(bucket, tmp_path / "pulled").version == second
    # Once it is the latest, the one before goes as usual.
    assert prune_versions(bucket, keep=1, grace_s=0).deleted_versions == (first,)


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


def _lock_for(bucket: BlobStore, pid: int) -> None:
    """The prune lock as a prune in process ``pid`` on this host holds it."""
    import time

    from citywok_pipeline.publishing.versions import PRUNE_LOCK_KEY

    body = {"host": os.uname().nodename, "pid": pid, "since": time.time()}
    assert bucket.put_new(PRUNE_LOCK_KEY, json.dumps(body).encode())


def test_one_prune_at_a_time_and_a_dead_prunes_lock_is_taken_over(
    snapshot_dir: Path, tmp_path: Path
) -> None:
    from citywok_pipeline.publishing.versions import PRUNE_LOCK_KEY

    bucket = LocalBlobStore(tmp_path / "bucket")
    publish_snapshot(snapshot_dir, bucket)
    other = subprocess.Popen(["sleep", "60"])
    try:
        _lock_for(bucket, other.pid)
        with pytest.raises(PruneBusyError, match=f"another prune is running \\(pid {other.pid}"):
            prune_versions(bucket, keep=1, grace_s=0)
    finally:
        other.kill()
        other.wait()
    # Its prune is gone (killed): the lock is replaced, and released at the end.
    assert prune_versions(bucket, keep=1, grace_s=0).kept
    assert not bucket.exists(PRUNE_LOCK_KEY)


def test_a_publish_waits_for_a_running_prune_before_its_last_check_of_its_blobs(
    snapshot_dir: Path, tmp_path: Path
) -> None:
    from citywok_pipeline.publishing.versions import PRUNE_LOCK_KEY

    from ..faults.conftest import wait_until

    bucket = LocalBlobStore(tmp_path / "bucket")
    first = publish_snapshot(snapshot_dir, bucket)
    alpha = next(s for s in first.manifest.shards if s.season == "alpha-s01")
    build_season(snapshot_dir, "beta-s01", (3, 32))
    prune = subprocess.Popen(["sleep", "60"])  # stands for a prune on this host
    outcome: list[Any] = []
    try:
        _lock_for(bucket, prune.pid)
        publisher = threading.Thread(
            target=lambda: outcome.append(publish_snapshot(snapshot_dir, bucket))
        )
        publisher.start()
        # The manifest is written, then the publish waits while the prune runs ...
        assert wait_until(lambda: len(list_versions(bucket)) == 2, timeout_s=60)
        assert publisher.is_alive()
        assert read_latest(bucket).version == first.version  # type: ignore[union-attr]
        # ... which, having listed the manifests before that one, deletes a blob it reuses.
        bucket.delete(alpha.key)
        bucket.delete(PRUNE_LOCK_KEY)
        publisher.join(timeout=60)
    finally:
        prune.kill()
        prune.wait()
    [second] = outcome
    assert bucket.exists(alpha.key) and "alpha-s01.lmdb" in second.uploaded
    assert read_latest(bucket).version == second.version  # type: ignore[union-attr]
    assert pull_version(bucket, tmp_path / "pulled").version == second.version
