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
import math
import os
import re
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ..blobstore import BlobNotFoundError, BlobStore, PreconditionFailedError
from ..files import file_sha256
from ..snapshot import Snapshot, SnapshotError, verify_snapshot
from ..snapshot.shard import FORMAT_VERSION

MANIFEST_FORMAT = "citywok-manifest"
MANIFEST_FORMAT_VERSION = 1
LATEST_KEY = "latest.json"
VERSIONS_PREFIX = "versions/"
BLOBS_PREFIX = "blobs/sha256/"
DEFAULT_KEEP = 5
# Blobs younger than this are never pruned: a publisher may be uploading them for a manifest
# it has not written yet.
DEFAULT_GRACE_S = 3600.0

# Held by a prune while it runs (a conditional put, so one prune at a time). A publish that has
# written its manifest waits for it to go before its last check of its blobs, which closes the
# race in which a prune that listed the manifests before that one deletes a blob it reuses.
# A lock whose prune is dead (same host: its pid is gone; elsewhere: older than this) is
# ignored and replaced.
PRUNE_LOCK_KEY = "prune.lock"
PRUNE_LOCK_STALE_S = 600.0


class PublishError(Exception):
    """A snapshot cannot be published; the message names the thing and the reason."""


class PublishConflictError(PublishError):
    """Another publisher moved ``latest.json`` first; this version was not made latest."""


class PruneBusyError(Exception):
    """Another prune holds the bucket's prune lock; the message says whose and since when."""


class ManifestError(Exception):
    """A manifest or ``latest.json`` is missing or unreadable; the message names it."""


def blob_key(sha256: str) -> str:
    return f"{BLOBS_PREFIX}{sha256}"


def manifest_key(version: str) -> str:
    return f"{VERSIONS_PREFIX}{version}.json"


# What the format defines, and all a manifest or latest.json read back may hold (both are
# hostile: anyone who can write to the bucket wrote them). Names become local paths only after
# these checks, so none can reach outside its folder.
VERSION_RE = re.compile(r"v\d{8}T\d{12}Z-[0-9a-f]{8}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# A shard file is one path segment of the blob-store key shape (shared/DESIGN.md), ending .lmdb.
SHARD_FILE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]{0,200}\.lmdb")
SEASON_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]{0,200}")
MAX_MANIFEST_BYTES = 64 << 20


def check_version(version: object) -> str:
    """``version`` if it is a version id (``v20261122T101500123456Z-1a2b3c4d``), else
    :class:`ManifestError` naming it."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ManifestError(
            f"{version!r} is not a version id (like v20261122T101500123456Z-1a2b3c4d)"
        )
    return version


class _Fields:
    """Typed reads of one JSON object's fields; a ``ValueError`` names the field and why."""

    def __init__(self, d: object, where: str) -> None:
        if not isinstance(d, dict):
            raise ValueError(f"{where or 'the top level'} is {type(d).__name__}, not an object")
        self.d, self.where = d, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kinds: tuple[type, ...], *, required: bool = True) -> Any:
        if key not in self.d:
            if required:
                raise ValueError(f"{self._name(key)} is missing")
            return None
        value = self.d[key]
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(
                f"{self._name(key)} is {type(value).__name__}, not {'/'.join(k.__name__ for k in kinds)}"
            )
        return value

    def text(self, key: str, pattern: re.Pattern[str] | None = None, *, required: bool = True,
             max_len: int = 1024) -> str | None:  # fmt: skip
        value = self.get(key, (str,), required=required)
        if value is None:
            return None
        if len(value) > max_len or (pattern is not None and not pattern.fullmatch(value)):
            raise ValueError(
                f"{self._name(key)} {value[:100]!r} is not of the shape the format defines"
            )
        return str(value)

    def count(self, key: str, *, required: bool = True) -> int:
        value = self.get(key, (int,), required=required)
        if value is None:
            return 0
        if value < 0:
            raise ValueError(f"{self._name(key)} is negative ({value})")
        return int(value)

    def number(self, key: str) -> float:
        value = float(self.get(key, (int, float)))
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{self._name(key)} is not a non-negative number ({value})")
        return value

    def strings(self, key: str) -> dict[str, str]:
        value = self.get(key, (dict,), required=False) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ValueError(f"{self._name(key)} must map strings to strings")
        return dict(value)


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
    def from_dict(cls, d: object, *, where: str = "shard") -> ShardEntry:
        """Parse and check one entry; raises ``ValueError`` naming the bad field."""
        f = _Fields(d, where)
        entry = cls(
            file=f.text("file", SHARD_FILE_RE) or "", season=f.text("season", SEASON_RE) or "",
            sha256=f.text("sha256", SHA256_RE) or "", size=f.count("size"),
            episodes=f.count("episodes"), postings=f.count("postings"),
            segments=f.count("segments", required=False), hours=f.number("hours"),
            built_at=f.text("built_at", required=False) or "", videos=f.strings("videos"),
            data_version=f.text("data_version", required=False),
        )  # fmt: skip
        key = f.text("key", required=False)
        if key is not None and key != entry.key:
            raise ValueError(f"{where}.key {key!r} is not {entry.key!r}, the key of its sha256")
        return entry


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
        """Parse a manifest and check every field's shape (the one parser of manifests).

        Raises
        ------
        ManifestError
            Not JSON, another format, or a field missing or not of the shape the format
            defines (a version id, shard file names of one path segment, 64-hex sha256s,
            non-negative counts); the message names the field.
        """
        try:
            if len(data) > MAX_MANIFEST_BYTES:
                raise ValueError(
                    f"{len(data)} bytes, more than any manifest ({MAX_MANIFEST_BYTES})"
                )
            f = _Fields(json.loads(data), "")
            if f.get("format", (str,), required=False) != MANIFEST_FORMAT:
                raise ValueError(f"format is {f.d.get('format')!r}, not {MANIFEST_FORMAT!r}")
            if f.count("format_version") > MANIFEST_FORMAT_VERSION:
                raise ValueError(
                    f"format version {f.d['format_version']} is newer than this code reads "
                    f"({MANIFEST_FORMAT_VERSION}); upgrade citywok"
                )
            version = f.text("version", VERSION_RE)
            previous = f.text("previous", VERSION_RE, required=False)
            raw_shards = f.get("shards", (list,))
            shards = tuple(
                ShardEntry.from_dict(s, where=f"shards[{i}]") for i, s in enumerate(raw_shards)
            )
            files = [s.file for s in shards]
            if len(set(files)) != len(files):
                dup = next(x for x in files if files.count(x) > 1)
                raise ValueError(f"two shards are both named {dup!r}")
            manifest = cls(
                version=version or "", created_at=f.text("created_at") or "", shards=shards,
                params=f.get("params", (dict,)), embedding=f.get("embedding", (dict,), required=False),
                code_version=f.get("code_version", (dict,), required=False) or {},
                previous=previous,
            )  # fmt: skip
            content = f.text("content_sha256", SHA256_RE, required=False)
            if content is not None and content != manifest.content_id():
                raise ValueError("content_sha256 does not match the shards it lists")
            return manifest
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"{label}: not a usable manifest ({exc})") from None


@dataclass(frozen=True)
class Latest:
    """What ``latest.json`` says, and its ETag for the next conditional move."""

    version: str
    manifest: str
    etag: str
    manifest_sha256: str


def read_latest(bucket: BlobStore) -> Latest | None:
    """The ``latest.json`` pointer, or None in a bucket nothing was published to.

    Raises :class:`ManifestError` when it is not JSON or its fields are not of the shapes
    the format defines (a version id, that version's manifest key, a 64-hex sha256).
    """
    blob = bucket.read_or_none(LATEST_KEY)
    if blob is None:
        return None
    try:
        if len(blob.data) > 1 << 16:
            raise ValueError(f"{len(blob.data)} bytes, more than any latest.json")
        f = _Fields(json.loads(blob.data), "")
        version = f.text("version", VERSION_RE) or ""
        manifest = f.text("manifest") or ""
        if manifest != manifest_key(version):
            raise ValueError(f"manifest {manifest[:100]!r} is not {manifest_key(version)!r}")
        sha256 = f.text("manifest_sha256", SHA256_RE) or ""
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{bucket.uri(LATEST_KEY)}: unreadable ({exc})") from None
    return Latest(version, manifest, blob.etag, sha256)


def read_manifest(bucket: BlobStore, version: str, *, sha256: str | None = None) -> Manifest:
    """The manifest of ``version``, checked against ``sha256`` when given (what
    ``latest.json`` says it is); raises :class:`ManifestError` naming the versions there are."""
    check_version(version)
    key = manifest_key(version)
    try:
        blob = bucket.read(key)
    except BlobNotFoundError:
        known = list_versions(bucket)
        raise ManifestError(
            f"{bucket.uri(key)}: no version {version!r} in {bucket.url}"
            + (f" (there are: {', '.join(known[-5:])})" if known else " (nothing published)")
        ) from None
    if sha256 is not None and hashlib.sha256(blob.data).hexdigest() != sha256:
        raise ManifestError(
            f"{bucket.uri(key)}: its sha256 is {hashlib.sha256(blob.data).hexdigest()}, but "
            f"{bucket.uri(LATEST_KEY)} says {sha256}: the manifest was changed or damaged; refused"
        )
    manifest = Manifest.from_json(blob.data, label=bucket.uri(key))
    if manifest.version != version:
        raise ManifestError(f"{bucket.uri(key)}: names version {manifest.version!r}")
    return manifest


def read_latest_manifest(bucket: BlobStore) -> tuple[Latest, Manifest] | None:
    """``latest.json`` and the manifest it names, checked against its ``manifest_sha256``."""
    latest = read_latest(bucket)
    if latest is None:
        return None
    return latest, read_manifest(bucket, latest.version, sha256=latest.manifest_sha256)


def list_versions(bucket: BlobStore) -> list[str]:
    """Every published version id, oldest first."""
    names = (o.key[len(VERSIONS_PREFIX) : -len(".json")] for o in bucket.list(VERSIONS_PREFIX))
    return sorted(v for v in names if VERSION_RE.fullmatch(v))


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
    snapshot_dir: str | os.PathLike[str], bucket: BlobStore, *, now: float | None = None
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
    # What killed publishers left: temp files no live writer holds, uploads over an hour old.
    for prefix in (BLOBS_PREFIX, VERSIONS_PREFIX, LATEST_KEY):
        bucket.remove_leftovers(prefix, older_than_s=DEFAULT_GRACE_S)
    found = read_latest_manifest(bucket)
    latest, previous = found if found else (None, None)
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
    # reused here (one that no version it kept referenced, older than its grace period): once
    # no prune runs (one starting now sees this manifest), put back what is gone before the
    # version can become the latest.
    _wait_for_prune(bucket)
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
    removed_leftovers: tuple[str, ...] = ()  # temp files and uploads of killed publishers


def prune_versions(
    bucket: BlobStore,
    *,
    keep: int = DEFAULT_KEEP,
    grace_s: float = DEFAULT_GRACE_S,
    now: float | None = None,
) -> PruneResult:
    """Keep the newest ``keep`` versions (and always the latest); delete the rest and every
    blob no kept manifest references.

    The versions counted are those that were made latest: ``latest.json``'s and the chain of
    their ``previous``. A manifest off that chain newer than the latest is a publish that may
    be about to move ``latest.json`` onto it, and is kept however old (with ``--grace 0`` too:
    ``make faults`` caught a prune deleting such a manifest just before it became the latest).
    One older than the latest was left by a publish that was killed or lost a race before it
    could move ``latest.json``: it is kept while younger than ``grace_s``, deleted after. So
    are the temp files and unfinished uploads killed publishers left
    (:meth:`BlobStore.remove_leftovers`).

    A blob younger than ``grace_s`` is left alone: a publisher may be uploading it for a
    manifest it has not written yet. Manifests are deleted before blobs, so a crash half-way
    never leaves a kept manifest without its blobs. The manifests are listed again before
    blobs are deleted, and a publish checks its blobs after writing its manifest, once no prune
    holds the bucket's prune lock (:data:`PRUNE_LOCK_KEY`, taken by a conditional put), so a
    publish racing a prune loses no blob: a prune that started before the manifest was written
    has ended by that check, and one that starts after it sees the manifest.

    Raises
    ------
    PruneBusyError
        Another prune is running on this bucket.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the latest version), got {keep}")
    _take_prune_lock(bucket)
    try:
        return _prune(bucket, keep, grace_s, now)
    finally:
        with contextlib.suppress(BlobNotFoundError):
            bucket.delete(PRUNE_LOCK_KEY)


def _lock_holder(bucket: BlobStore) -> dict[str, Any] | None:
    """Who holds the prune lock, if a live prune does (None: free, or its prune is dead)."""
    blob = bucket.read_or_none(PRUNE_LOCK_KEY)
    if blob is None:
        return None
    try:
        holder = json.loads(blob.data)
        since, host, pid = float(holder["since"]), str(holder["host"]), int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: not a lock this code wrote
    if time.time() - since > PRUNE_LOCK_STALE_S:
        return None
    if host == os.uname().nodename:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return holder


def _take_prune_lock(bucket: BlobStore) -> None:
    body = json.dumps(
        {"host": os.uname().nodename, "pid": os.getpid(), "since": time.time()}
    ).encode()
    for _ in range(2):
        if bucket.put_new(PRUNE_LOCK_KEY, body):
            return
        holder = _lock_holder(bucket)
        if holder is not None:
            raise PruneBusyError(
                f"{bucket.uri(PRUNE_LOCK_KEY)}: another prune is running (pid {holder['pid']} "
                f"on {holder['host']}, since {time.ctime(holder['since'])}); try again later"
            )
        with contextlib.suppress(BlobNotFoundError):
            bucket.delete(PRUNE_LOCK_KEY)  # a dead prune's
    raise PruneBusyError(f"{bucket.uri(PRUNE_LOCK_KEY)}: could not take the prune lock")


def _wait_for_prune(bucket: BlobStore, *, every_s: float = 0.05) -> None:
    """Until no live prune of another process holds the lock (at most its staleness limit).
    A publish inside this process's own prune does not wait for itself: that prune lists the
    manifests again before deleting blobs, after the publish wrote its manifest."""
    me = (os.uname().nodename, os.getpid())
    deadline = time.monotonic() + PRUNE_LOCK_STALE_S
    while time.monotonic() < deadline:
        holder = _lock_holder(bucket)
        if holder is None or (holder["host"], holder["pid"]) == me:
            return
        time.sleep(every_s)


def _prune(bucket: BlobStore, keep: int, grace_s: float, now: float | None) -> PruneResult:
    now = time.time() if now is None else now
    leftovers = bucket.remove_leftovers(older_than_s=grace_s)
    written = {
        o.key[len(VERSIONS_PREFIX) : -len(".json")]: o.modified
        for o in bucket.list(VERSIONS_PREFIX)
    }
    versions = sorted(v for v in written if VERSION_RE.fullmatch(v))
    latest = read_latest(bucket)
    manifests: dict[str, Manifest] = {}
    chain: list[str] = []  # the versions made latest, newest first
    v = latest.version if latest else None
    # (latest's own manifest is read even when not listed: a missing one stops the prune)
    while v is not None and v not in manifests and (v in written or not chain):
        try:
            manifests[v] = read_manifest(bucket, v)
        except ManifestError:
            if len(chain) < keep:  # a version to keep is unreadable: stop, delete nothing
                raise
            break
        chain.append(v)
        v = manifests[v].previous
    # A manifest newer than latest's may be a publish about to move latest.json onto it (its
    # version is stamped after it read latest, so one that can still win is newer than the
    # latest it will replace): kept, whatever its age. One of a killed publish is deleted once
    # a newer version is the latest and it is older than the grace period.
    newest = latest.version if latest else None
    pending = [v for v in versions if v not in manifests and (newest is None or v > newest)]
    young_orphans = [v for v in versions if v not in manifests and now - written[v] < grace_s]
    kept = sorted({*chain[:keep], *young_orphans, *pending})
    referenced: set[str] = set()
    for v in kept:
        manifest = manifests.get(v) or read_manifest(bucket, v)
        referenced.update(s.key for s in manifest.shards)
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
    return PruneResult(tuple(kept), tuple(doomed), tuple(deleted_blobs), tuple(leftovers))
