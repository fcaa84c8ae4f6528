"""Published versions in a bucket: content-addressed shards, immutable manifests, ``latest.json``.

Bucket layout, under the bucket URL's prefix (beside ``artefacts/``)::

    blobs/sha256/<hex>          a shard's bytes, named by their sha256 (written once)
    versions/<version>.json     one manifest per version (written once, never changed)
    latest.json                 {"version", "manifest", "manifest_sha256", "updated_at"}

Publishing uploads the shards the bucket lacks, writes the manifest, and moves ``latest.json``
last with a conditional write on the ETag it read: a reader that follows ``latest.json`` only
ever finds a complete version, and of two publishers racing one wins and the other gets
:class:`PublishConflictError`. Version ids sort by time (to the microsecond): ``v20261122T101500123456Z-<8 hex>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ..files import file_sha256
from ..snapshot import Snapshot, SnapshotError, verify_snapshot
from ..snapshot.shard import FORMAT_VERSION
from .bucket import BlobNotFoundError, Bucket, PreconditionFailedError

MANIFEST_FORMAT = "citywok-manifest"
MANIFEST_FORMAT_VERSION = 1
LATEST_KEY = "latest.json"
VERSIONS_PREFIX = "versions/"
BLOBS_PREFIX = "blobs/sha256/"
DEFAULT_KEEP = 5
# Blobs younger than this are never pruned: a publisher may be uploading them for a manifest
# it has not written yet.
DEFAULT_GRACE_S = 3600.0


class PublishError(Exception):
    """A snapshot cannot be published; the message names the thing and the reason."""


class PublishConflictError(PublishError):
    """Another publisher moved ``latest.json`` first; this version was not made latest."""


class ManifestError(Exception):
    """A manifest or ``latest.json`` is missing or unreadable; the message names it."""


def blob_key(sha256: str) -> str:
    return f"{BLOBS_PREFIX}{sha256}"


def manifest_key(version: str) -> str:
    return f"{VERSIONS_PREFIX}{version}.json"


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a version: its file name, content address and what it holds."""

    file: str
    season: str
    sha256: str
    size: int
    episodes: int
    postings: int
    segments: int
    hours: float
    built_at: str
    videos: dict[str, str] = field(default_factory=dict)
    data_version: str | None = None

    @property
    def key(self) -> str:
        return blob_key(self.sha256)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "season": self.season,
            "sha256": self.sha256,
            "size": self.size,
            "key": self.key,
            "episodes": self.episodes,
            "postings": self.postings,
            "segments": self.segments,
            "hours": self.hours,
            "built_at": self.built_at,
            "videos": self.videos,
            "data_version": self.data_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardEntry:
        return cls(
            file=d["file"], season=d["season"], sha256=d["sha256"], size=int(d["size"]),
            episodes=int(d["episodes"]), postings=int(d["postings"]),
            segments=int(d.get("segments", 0)), hours=float(d["hours"]),
            built_at=d.get("built_at", ""), videos=dict(d.get("videos") or {}),
            data_version=d.get("data_version"),
        )  # fmt: skip


@dataclass(frozen=True)
class Manifest:
    """An immutable published version: every shard, the params and where it came from."""

    version: str
    created_at: str
    shards: tuple[ShardEntry, ...]
    params: dict[str, Any]
    embedding: dict[str, Any] | None
    code_version: dict[str, Any]
    previous: str | None = None

    def content_id(self) -> str:
        """What the version holds (shard names and hashes), independent of when it was made."""
        parts = sorted(f"{s.file}:{s.sha256}" for s in self.shards)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "version": self.version,
            "created_at": self.created_at,
            "previous": self.previous,
            "code_version": self.code_version,
            "params": self.params,
            "embedding": self.embedding,
            "content_sha256": self.content_id(),
            "totals": {
                "shards": len(self.shards),
                "episodes": sum(s.episodes for s in self.shards),
                "postings": sum(s.postings for s in self.shards),
                "segments": sum(s.segments for s in self.shards),
                "hours": round(sum(s.hours for s in self.shards), 4),
                "bytes": sum(s.size for s in self.shards),
            },
            "shards": [s.to_dict() for s in self.shards],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, label: str) -> Manifest:
        try:
            d = json.loads(data)
            if d.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, not {MANIFEST_FORMAT!r}")
            if int(d.get("format_version", 0)) > MANIFEST_FORMAT_VERSION:
                raise ValueError(
                    f"format version {d['format_version']} is newer than this code reads "
                    f"({MANIFEST_FORMAT_VERSION}); upgrade citywok"
                )
            return cls(
                version=d["version"], created_at=d["created_at"],
                shards=tuple(ShardEntry.from_dict(s) for s in d["shards"]),
                params=d["params"], embedding=d.get("embedding"),
                code_version=d.get("code_version") or {}, previous=d.get("previous"),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{label}: not a usable manifest ({exc})") from None


@dataclass(frozen=True)
class Latest:
    """What ``latest.json`` says, and its ETag for the next conditional move."""

    version: str
    manifest: str
    etag: str


def read_latest(bucket: Bucket) -> Latest | None:
    """The ``latest.json`` pointer, or None in a bucket nothing was published to."""
    blob = bucket.read_or_none(LATEST_KEY)
    if blob is None:
        return None
    try:
        d = json.loads(blob.data)
        return Latest(d["version"], d["manifest"], blob.etag)
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{bucket.uri(LATEST_KEY)}: unreadable ({exc})") from None


def read_manifest(bucket: Bucket, version: str) -> Manifest:
    """The manifest of ``version``; raises :class:`ManifestError` naming the versions there are."""
    key = manifest_key(version)
    try:
        blob = bucket.read(key)
    except BlobNotFoundError:
        known = list_versions(bucket)
        raise ManifestError(
            f"{bucket.uri(key)}: no version {version!r} in {bucket.url}"
            + (f" (there are: {', '.join(known[-5:])})" if known else " (nothing published)")
        ) from None
    manifest = Manifest.from_json(blob.data, label=bucket.uri(key))
    if manifest.version != version:
        raise ManifestError(f"{bucket.uri(key)}: names version {manifest.version!r}")
    return manifest


def list_versions(bucket: Bucket) -> list[str]:
    """Every published version id, oldest first."""
    return sorted(
        o.key[len(VERSIONS_PREFIX) : -len(".json")]
        for o in bucket.list(VERSIONS_PREFIX)
        if o.key.endswith(".json")
    )


def _code_version() -> dict[str, Any]:
    try:
        package = importlib_metadata.version("citywok-pipeline")
    except importlib_metadata.PackageNotFoundError:
        package = "unknown"
    return {"package": package, "shard_format": FORMAT_VERSION}


def describe_snapshot(snapshot_dir: str | os.PathLike[str]) -> tuple[list[ShardEntry], Any, Any]:
    """Verify a snapshot directory and describe its shards: (entries, params, embedding)."""
    problems = verify_snapshot(snapshot_dir)
    if problems:
        raise PublishError(f"{snapshot_dir}: will not publish a snapshot that fails verification: "
                           + "; ".join(problems))  # fmt: skip
    try:
        snap = Snapshot.open(snapshot_dir)
    except SnapshotError as exc:
        raise PublishError(str(exc)) from None
    entries = []
    embedding: dict[str, Any] | None = None
    with snap:
        for shard in snap.shards:
            path, meta = shard.path, shard.meta
            extra = meta.get("extra") or {}
            seg = meta.get("segments") or {}
            if seg and embedding is None:
                embedding = {k: seg[k] for k in ("model", "dim", "quantization") if k in seg}
            entries.append(
                ShardEntry(
                    file=path.name, season=str(meta["season"]), sha256=file_sha256(path),
                    size=path.stat().st_size, episodes=int(meta["n_episodes"]),
                    postings=int(meta["n_postings"]), segments=int(seg.get("n", 0)),
                    hours=round(float(meta.get("duration_s", 0.0)) / 3600, 4),
                    built_at=str(meta.get("built_at", "")),
                    videos=dict(extra.get("videos") or {}),
                    data_version=extra.get("data_version"),
                )
            )  # fmt: skip
        params = snap.params.to_dict()
    return entries, params, embedding


@dataclass(frozen=True)
class PublishResult:
    version: str
    created: bool  # False: the latest version already held exactly these shards
    uploaded: tuple[str, ...]  # shard files uploaded
    reused: tuple[str, ...]  # shard files the bucket already had
    manifest: Manifest


def publish_snapshot(
    snapshot_dir: str | os.PathLike[str], bucket: Bucket, *, now: float | None = None
) -> PublishResult:
    """Publish a snapshot directory as a new version (or find that it is the latest already).

    Raises
    ------
    PublishError
        The snapshot fails verification or cannot be opened.
    PublishConflictError
        ``latest.json`` moved while this ran; the new manifest stays in the bucket, unused.
    """
    snapshot_dir = Path(snapshot_dir)
    entries, params, embedding = describe_snapshot(snapshot_dir)
    latest = read_latest(bucket)
    previous = read_manifest(bucket, latest.version) if latest else None
    t = time.time() if now is None else now
    created = time.gmtime(t)
    draft = Manifest(
        version="", created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", created),
        shards=tuple(entries), params=params, embedding=embedding,
        code_version=_code_version(), previous=latest.version if latest else None,
    )  # fmt: skip
    if previous is not None and previous.content_id() == draft.content_id():
        return PublishResult(previous.version, False, (), tuple(e.file for e in entries), previous)

    uploaded, reused = [], []
    for entry in entries:
        path = snapshot_dir / entry.file
        if bucket.exists(entry.key) or not bucket.put_new(entry.key, path):
            reused.append(entry.file)
        else:
            uploaded.append(entry.file)
    micros = int((t % 1) * 1_000_000)
    version = f"v{time.strftime('%Y%m%dT%H%M%S', created)}{micros:06d}Z-{draft.content_id()[:8]}"
    manifest = Manifest(**{**draft.__dict__, "version": version})
    manifest_bytes = manifest.to_json()
    if not bucket.put_new(manifest_key(version), manifest_bytes):
        raise PublishConflictError(
            f"{bucket.uri(manifest_key(version))} already exists: the same snapshot was "
            "published in the same second by someone else"
        )
    # A prune that listed the manifests before this one was written may have deleted a blob
    # reused here (one that no version it kept referenced, older than its grace period): put
    # back what is gone before the version can become the latest.
    present = {o.key for o in bucket.list(BLOBS_PREFIX)}
    for entry in entries:
        if entry.key not in present:
            bucket.put_new(entry.key, snapshot_dir / entry.file)
            if entry.file in reused:
                reused.remove(entry.file)
                uploaded.append(entry.file)
    pointer = json.dumps({
        "version": version,
        "manifest": manifest_key(version),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "updated_at": manifest.created_at,
    }, indent=2).encode()  # fmt: skip
    try:
        bucket.replace(LATEST_KEY, pointer, if_match=latest.etag if latest else None)
    except PreconditionFailedError as exc:
        now_latest = read_latest(bucket)
        raise PublishConflictError(
            f"{bucket.uri(LATEST_KEY)} moved to {now_latest.version if now_latest else '?'} while "
            f"{version} was being published from {latest.version if latest else 'nothing'}; "
            f"{version} was not made latest (publish again to put it on top) [{exc}]"
        ) from None
    return PublishResult(version, True, tuple(uploaded), tuple(reused), manifest)


@dataclass(frozen=True)
class PruneResult:
    kept: tuple[str, ...]
    deleted_versions: tuple[str, ...]
    deleted_blobs: tuple[str, ...]


def prune_versions(
    bucket: Bucket,
    *,
    keep: int = DEFAULT_KEEP,
    grace_s: float = DEFAULT_GRACE_S,
    now: float | None = None,
) -> PruneResult:
    """Keep the newest ``keep`` versions (and always the latest); delete the rest and every
    blob no kept manifest references.

    A blob younger than ``grace_s`` is left alone: a publisher may be uploading it for a
    manifest it has not written yet. Manifests are deleted before blobs, so a crash half-way
    never leaves a kept manifest without its blobs. The manifests are listed again before
    blobs are deleted, and a publish checks its blobs after writing its manifest, so a publish
    racing a prune loses no blob unless the prune deletes it in the moment between the two.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the latest version), got {keep}")
    now = time.time() if now is None else now
    versions = list_versions(bucket)
    latest = read_latest(bucket)
    kept = versions[-keep:]
    if latest and latest.version not in kept:
        kept.append(latest.version)
    referenced: set[str] = set()
    for v in kept:
        referenced.update(s.key for s in read_manifest(bucket, v).shards)
    doomed = [v for v in versions if v not in kept]
    for v in doomed:
        bucket.delete(manifest_key(v))
    # Versions published since the listing above keep their blobs too (a publish also puts
    # back, before moving latest, a reused blob that a prune deleted under it).
    for v in set(list_versions(bucket)) - set(versions):
        with contextlib.suppress(ManifestError):  # pruned meanwhile by another prune
            referenced.update(s.key for s in read_manifest(bucket, v).shards)
    deleted_blobs = []
    for obj in bucket.list(BLOBS_PREFIX):
        if obj.key not in referenced and now - obj.modified >= grace_s:
            bucket.delete(obj.key)
            deleted_blobs.append(obj.key)
    return PruneResult(tuple(sorted(kept)), tuple(doomed), tuple(deleted_blobs))
