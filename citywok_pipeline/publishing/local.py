"""Pulled versions on local disk, side by side, and the atomic switch between them.

Layout of a pull directory::

    DIR/versions/<version>/         one directory per version: its shards and manifest.json
    DIR/current -> versions/<ver>   the version in use: a symlink replaced by rename(2)

A shard already present in an earlier local version (same sha256) is copied from there, not
downloaded again. It is copied, not hard-linked: LMDB refuses to open one file (inode) twice
in a process, and a server holds the old version open while it opens the new one.

A version carries only its shards. The library graph (:mod:`..snapshot.library_graph`) is
built here from the version's verified shards, after they are in place and before the switch,
so that a server opening the new version finds it; no graph bytes from the bucket are read.
It starts from the current version's graph (hard-linked in), updated in place: only the
seasons that changed cost a build.
A build that is killed leaves the version complete and searched shard by shard (and at most a
hidden ``.*.tmp`` file in it, removed by the next pull, which builds the graph again).

``citywok serve DIR`` and ``citywok match DIR`` read ``DIR/current`` when there is one, else
DIR itself as a plain directory of shards (what ``citywok index --snapshot DIR`` writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..blobstore import BlobStore
from ..files import CURRENT, current_link, exclusive_lock, fsync_dir, resolve_snapshot_dir
from ..snapshot import SnapshotError, verify_snapshot
from .versions import (
    Manifest,
    ManifestError,
    ShardEntry,
    check_version,
    read_latest_manifest,
    read_manifest,
)

MANIFEST_FILE = "manifest.json"
DEFAULT_KEEP_LOCAL = 3
# Held for the whole of a pull (server workers sharing a cache take turns): whatever staging
# folder or temporary link is found under it was left by a pull that was killed.
PULL_LOCK = ".pull.lock"


class PullError(Exception):
    """A version cannot be pulled; the previous local version stays in use."""


class IntegrityError(PullError):
    """A downloaded shard is not what the manifest says (corrupted or truncated)."""


def current_version(path: str | os.PathLike[str]) -> str | None:
    """The version id in use under ``path`` (None for a plain, unpublished snapshot)."""
    manifest = resolve_snapshot_dir(path) / MANIFEST_FILE
    try:
        return str(json.loads(manifest.read_bytes())["version"])
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError):
        return None


@dataclass(frozen=True)
class PullResult:
    version: str
    path: Path  # the version's directory of shards
    downloaded: tuple[str, ...]  # shard files fetched from the bucket
    reused: tuple[str, ...]  # shard files already here (from an earlier version)
    switched: bool  # False when it was already the current version
    library_graph: int = 0  # segments of the library graph built for it (0: none built)
    library_graph_note: str | None = None  # why the library graph could not be built


class _HashingWriter:
    def __init__(self, f: object) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)  # type: ignore[attr-defined, no-any-return]


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a name already checked to be one plain path segment; refuses
    (``PullError``) anything that would resolve outside ``folder`` all the same."""
    path = folder / name
    if (
        Path(name).name != name
        or name in ("", ".", "..")
        or path.resolve().parent != folder.resolve()
    ):
        raise PullError(f"{folder}: refusing to write {name!r}: it is not a plain name inside it")
    return path


def _local_copies(versions_dir: Path) -> dict[str, Path]:
    """sha256 -> a shard file of a complete local version that has it."""
    found: dict[str, Path] = {}
    for manifest_file in sorted(versions_dir.glob(f"*/{MANIFEST_FILE}")):
        if manifest_file.parent.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ManifestError, PullError):
            manifest = Manifest.from_json(manifest_file.read_bytes(), label=str(manifest_file))
            for s in manifest.shards:
                path = inside(manifest_file.parent, s.file)
                if path.is_file() and path.stat().st_size == s.size:
                    found[s.sha256] = path
    return found


def _remove_leftovers(pull_dir: Path) -> list[str]:
    """Staging folders and temporary links of pulls that were killed (call under the lock)."""
    removed = []
    versions = pull_dir / "versions"
    for p in sorted(versions.glob(".*.tmp")) if versions.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(str(p))
    for p in pull_dir.glob(f".{CURRENT}.*"):
        if p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(str(p))
    # A library graph build that was killed: its temporary files in a complete version.
    for p in sorted(versions.glob("*/.*.tmp")) if versions.is_dir() else []:
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


def _seed_library_graph(current: Path, target: Path) -> None:
    """Give a version without a library graph the current version's, to be updated in place
    (only the seasons that changed cost a build: :func:`..snapshot.library_graph.build_library_graph`
    keeps the rows of every shard whose vectors are the same). Hard links, each made aside and
    renamed, the graph before its description: nothing is written into either file later (an
    update writes a new file and renames it), and a link left half-made is a ``.*.tmp`` file
    the next pull removes. A seeded graph that does not fit is built afresh."""
    from ..snapshot.library_graph import GRAPH_FILE, INDEX_FILE

    if current == target or (target / INDEX_FILE).exists():
        return
    for name in (GRAPH_FILE, INDEX_FILE):
        source, aside = current / name, target / f".{name}.seed.tmp"
        try:
            aside.unlink(missing_ok=True)
            os.link(source, aside)
        except OSError:
            aside.unlink(missing_ok=True)
            return  # none to seed from (or a file system without links): built in full
        os.replace(aside, target / name)


def _build_library_graph(version_dir: Path) -> tuple[int, str | None]:
    """The version's library graph, built from its shards (already verified) unless it has a
    current one: ``(segments, None)``, or ``(0, why)`` when it could not be built; the version
    is then searched shard by shard, as it would be without a graph."""
    from ..snapshot.library_graph import refresh_library_graph

    try:
        return refresh_library_graph(version_dir, every_shard=True), None
    except (SnapshotError, OSError, MemoryError, RuntimeError, ValueError) as exc:
        return 0, (
            f"{version_dir}: the library graph was not built ({exc}); searching each shard's "
            "own graph (slower); the next pull builds it"
        )


def _fetch_shard(bucket: BlobStore, manifest: Manifest, entry: ShardEntry, target: Path) -> None:
    """Download a shard to ``target``, checking its size and sha256 against the manifest."""
    with open(target, "wb") as f:
        w = _HashingWriter(f)
        bucket.download(entry.key, w)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    if w.size != entry.size or w.sha.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{bucket.uri(entry.key)} ({entry.file} of {manifest.version}): got {w.size} "
            f"bytes with sha256 {w.sha.hexdigest()}, the manifest says {entry.size} bytes "
            f"with sha256 {entry.sha256}: corrupted or truncated; rejected"
        )


def switch_to(pull_dir: str | os.PathLike[str], version: str) -> None:
    """Point ``DIR/current`` at ``versions/<version>`` atomically (symlink, then rename)."""
    pull_dir = Path(pull_dir)
    try:
        check_version(version)
    except ManifestError as exc:
        raise PullError(str(exc)) from None
    if not (pull_dir / "versions" / version / MANIFEST_FILE).is_file():
        raise PullError(f"{pull_dir}: no complete local version {version!r}")
    tmp = pull_dir / f".{CURRENT}.{uuid.uuid4().hex[:8]}"
    os.symlink(f"versions/{version}", tmp)
    try:
        os.replace(tmp, current_link(pull_dir))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(pull_dir)


def pull_version(
    bucket: BlobStore,
    pull_dir: str | os.PathLike[str],
    *,
    version: str | None = None,
    keep_local: int = DEFAULT_KEEP_LOCAL,
) -> PullResult:
    """Fetch ``version`` (default: the latest) into ``pull_dir`` and make it current.

    Only the shards missing locally are downloaded; each is checked against the manifest's
    sha256 and size, and the assembled version is verified (shard checksums, params) before
    the switch. On any failure the previous current version is left in place. Then its
    library graph is built from its shards when it is large enough for one and has none that
    fits (the same rule as ``citywok index``); a graph that cannot be built is not a failure
    (``library_graph_note`` says why).

    Raises
    ------
    PullError
        Nothing published, no such version, or a shard failed verification
        (:class:`IntegrityError`).
    """
    pull_dir = Path(pull_dir)
    try:
        if version is None:
            found = read_latest_manifest(bucket)
            if found is None:
                raise PullError(f"{bucket.url}: nothing published here yet (no latest.json)")
            manifest = found[1]
        else:
            manifest = read_manifest(bucket, check_version(version))
    except ManifestError as exc:
        raise PullError(str(exc)) from None
    version = manifest.version
    pull_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(pull_dir / PULL_LOCK):
        _remove_leftovers(pull_dir)
        versions = pull_dir / "versions"
        versions.mkdir(exist_ok=True)
        target = inside(versions, version)
        downloaded, reused = [], []
        if not (target / MANIFEST_FILE).is_file():
            local = _local_copies(versions)
            staging = inside(versions, f".{version}.{uuid.uuid4().hex[:8]}.tmp")
            staging.mkdir()
            try:
                for entry in manifest.shards:
                    path = inside(staging, entry.file)
                    if entry.sha256 in local:
                        shutil.copyfile(local[entry.sha256], path)
                        reused.append(entry.file)
                    else:
                        _fetch_shard(bucket, manifest, entry, path)
                        downloaded.append(entry.file)
                (staging / MANIFEST_FILE).write_bytes(manifest.to_json())
                problems = verify_snapshot(staging)
                if problems:
                    raise IntegrityError(
                        f"{bucket.url} version {version} fails verification: " + "; ".join(problems)
                    )
                fsync_dir(staging)
                staging.rename(target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging)
        else:
            reused = [e.file for e in manifest.shards]
        # Before the switch, so that a server opening the new version finds its graph.
        _seed_library_graph(resolve_snapshot_dir(pull_dir), target)
        graph, note = _build_library_graph(target)
        switched = current_version(pull_dir) != version
        if switched:
            switch_to(pull_dir, version)
        prune_local(pull_dir, keep=keep_local)
    return PullResult(
        version, target, tuple(downloaded), tuple(reused), switched,
        library_graph=graph, library_graph_note=note,
    )  # fmt: skip


def prune_local(pull_dir: str | os.PathLike[str], *, keep: int = DEFAULT_KEEP_LOCAL) -> list[str]:
    """Delete local versions beyond the newest ``keep`` (never the current one). A server that
    still has a deleted version open keeps reading it (the files live on while mapped).
    Returns the versions deleted."""
    pull_dir = Path(pull_dir)
    versions_dir = pull_dir / "versions"
    if not versions_dir.is_dir():
        return []
    current = current_version(pull_dir)
    local = sorted(
        p.name for p in versions_dir.iterdir() if not p.name.startswith(".") and p.is_dir()
    )
    kept = set(local[-max(keep, 1) :]) | ({current} if current else set())
    deleted = [v for v in local if v not in kept]
    for v in deleted:
        shutil.rmtree(versions_dir / v)
    return deleted
