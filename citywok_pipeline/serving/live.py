"""The snapshot a server answers from, swapped for a newer version between requests.

A request holds a reference to the snapshot it started with (:meth:`LiveSnapshot.use`); a swap
installs the new one for the next requests and closes the old one when its last request ends.
No request waits for a swap and none sees a half-opened version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..blobstore import BlobStore
from ..publishing import current_version, pull_version, read_latest, resolve_snapshot_dir
from ..snapshot import Snapshot

log = logging.getLogger(__name__)


class SnapshotSource(Protocol):
    """Where versions come from: a cheap change token, and a way to open the current one."""

    def token(self) -> object:
        """Changes whenever there is a different version to open."""

    def open(self) -> tuple[Snapshot, str | None]:
        """Open the current version: (snapshot, version id or None)."""

    def open_cached(self) -> tuple[object, Snapshot, str | None] | None:
        """When the source cannot be reached at start: (token, snapshot, version) of the last
        complete version kept locally, or None when there is none (or nothing to fall back
        to)."""

    def describe(self) -> str: ...


class DirectorySource:
    """A pull directory (``DIR/current`` is followed) or a plain directory of shards.

    The token is the ``current`` link's target. A plain directory is served as it was at
    start: LMDB cannot open a second time a shard file this process holds open, so its
    unchanged shards could not be reopened beside the old ones (a pull directory gives each
    version its own files).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def token(self) -> object:
        link = self.path / "current"
        return os.readlink(link) if link.is_symlink() else None

    def open(self) -> tuple[Snapshot, str | None]:
        # Answer at once; the posting arrays are checked by a thread, and a shard that fails
        # is refused (Snapshot.refused) while the others go on answering.
        snap = Snapshot.open(resolve_snapshot_dir(self.path), checks="background")
        return snap, current_version(self.path)

    def open_cached(self) -> tuple[object, Snapshot, str | None] | None:
        return None  # the directory is the only copy

    def describe(self) -> str:
        return str(self.path)


class BucketSource:
    """A bucket's ``latest.json``, pulled into a local cache directory before each swap.

    Server worker processes share the cache: :func:`pull_version` holds the cache's lock
    file, so one of them downloads a new version while the others wait, then find it
    complete and only open it.
    """

    def __init__(self, bucket: BlobStore, cache_dir: str | os.PathLike[str]) -> None:
        self.bucket = bucket
        self.cache = DirectorySource(cache_dir)

    def token(self) -> object:
        latest = read_latest(self.bucket)
        return latest.version if latest else None

    def open(self) -> tuple[Snapshot, str | None]:
        pulled = pull_version(self.bucket, self.cache.path)
        if pulled.library_graph_note:  # served all the same, each shard's graph searched
            log.warning("citywok serve: %s", pulled.library_graph_note)
        return self.cache.open()

    def open_cached(self) -> tuple[object, Snapshot, str | None] | None:
        """The cache's ``current``: a pull switches it only to a complete, verified version."""
        if current_version(self.cache.path) is None:
            return None
        snap, version = self.cache.open()
        return version, snap, version  # a bucket's token is its latest version id

    def describe(self) -> str:
        return self.bucket.url


def _ready(snap: Snapshot) -> Snapshot:
    """The snapshot ready to answer: its lookup structures built now, not by the first
    request to reach it."""
    try:
        snap.stacked()
    except BaseException:
        snap.close()
        raise
    return snap


def _open(source: SnapshotSource) -> tuple[Snapshot, str | None]:
    snap, version = source.open()
    return _ready(snap), version


def open_at_start(source: SnapshotSource) -> tuple[object, Snapshot, str | None, str | None]:
    """Open ``source`` to start serving: ``(token, snapshot, version, problem)``.

    When the source fails (a bucket unreachable, a pull that fails) and a complete version is
    kept locally, that one is opened and ``problem`` says why; without one the error is
    raised. The token is taken before the version is opened, so that a newer version
    published in between is still picked up.
    """
    try:
        token = source.token()
        snap, version = _open(source)
        return token, snap, version, None
    except Exception as exc:
        cached = source.open_cached()
        if cached is None:
            raise
        problem = f"{type(exc).__name__}: {exc}"
        token, snap, version = cached
        log.warning(
            "citywok serve: %s is unavailable (%s); serving the cached version %s",
            source.describe(), problem, version,
        )  # fmt: skip
        return token, _ready(snap), version, problem


@dataclass
class Held:
    """One open version and the requests using it."""

    snapshot: Snapshot
    version: str | None
    token: object
    opened_at: float = field(default_factory=time.time)
    refs: int = 0
    retired: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # per-version helpers (a searcher)


class LiveSnapshot:
    """The current version of a source, refreshed by :meth:`refresh` or a watcher thread.

    ``on_change`` is called with the version held at start, after every swap, and after every
    poll of the watcher (what a version's shards are refused for can change while it is
    served: its big arrays are checked in the background).
    """

    def __init__(
        self, source: SnapshotSource, *, on_change: Callable[[Held], None] | None = None
    ) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        token, snap, version, problem = open_at_start(source)
        self._held = Held(snap, version, token)
        self.swaps = 0
        self.last_error: str | None = problem
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            with self.use() as held:
                self._on_change(held)

    @property
    def version(self) -> str | None:
        return self._held.version

    @contextlib.contextmanager
    def use(self) -> Iterator[Held]:
        """The current version, kept open until the block ends even if a swap happens."""
        with self._lock:
            held = self._held
            held.refs += 1
        try:
            yield held
        finally:
            with self._lock:
                held.refs -= 1
                close = held.retired and held.refs == 0
            if close:
                held.snapshot.close()

    def refresh(self) -> bool:
        """Open the source's version if it changed and swap it in; True when swapped.

        A version that cannot be opened (a failed pull, a corrupt shard) is logged and kept
        out; the current one goes on serving.
        """
        with self._refresh_lock:
            try:
                token = self.source.token()
                if token == self._held.token:
                    return False
                snap, version = _open(self.source)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("citywok serve: keeping %s: %s", self._held.version, self.last_error)
                return False
            new = Held(snap, version, token)
            with self._lock:
                old, self._held = self._held, new
                old.retired = True
                close = old.refs == 0
            if close:
                old.snapshot.close()
            self.swaps += 1
            self.last_error = None
            log.info("citywok serve: now serving %s (was %s)", version, old.version)
            self._changed()
            return True

    def watch(self, poll_s: float) -> None:
        """Poll the source every ``poll_s`` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(poll_s):
                if not self.refresh():
                    self._changed()

        self._thread = threading.Thread(target=loop, name="citywok-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            held = self._held
            held.retired = True
            close = held.refs == 0
        if close:
            held.snapshot.close()
