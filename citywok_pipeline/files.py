"""Small file helpers shared by the core, the publisher and the artefact stores."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

# A pull directory's link to the version in use (the publisher writes it, every reader opens
# through it); here rather than in publishing so that a one-shot command opens a snapshot
# without importing the publisher and its HTTP and S3 clients.
CURRENT = "current"


def current_link(pull_dir: str | os.PathLike[str]) -> Path:
    return Path(pull_dir) / CURRENT


def resolve_snapshot_dir(path: str | os.PathLike[str]) -> Path:
    """The directory of shards to open: ``path/current`` when ``path`` holds pulled versions."""
    link = current_link(path)
    return link.resolve() if link.is_symlink() or link.is_dir() else Path(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename into ``path`` durable (the directory entry, not just the file)."""
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent) for the block: one
    process or thread at a time, released by the kernel if the holder dies."""
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def temp_beside(target: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """A new hidden temp file beside ``target`` (``.<name>.<uuid><suffix>.tmp``), held under
    an exclusive ``flock`` for the block and removed at its end (unless renamed away).

    The lock says the writer is alive: the kernel drops it when the writer dies, however it
    dies, so :func:`remove_dead_temps` can tell a killed writer's leftover from a file being
    written now.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{suffix}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.close(fd)


def remove_dead_temps(
    folder: str | os.PathLike[str], pattern: str = ".*.tmp", *, recursive: bool = True
) -> list[Path]:
    """Remove the temp files (``pattern`` in ``folder``, and below it when ``recursive``) of
    writers that died: those no live process holds locked (see :func:`temp_beside`).
    Returns what was removed."""
    removed = []
    root = Path(folder)
    found = (root.rglob(pattern) if recursive else root.glob(pattern)) if root.is_dir() else []
    for p in sorted(found):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or not a plain file
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive
            os.close(fd)
            continue
        try:
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
        finally:
            os.close(fd)
    return removed
