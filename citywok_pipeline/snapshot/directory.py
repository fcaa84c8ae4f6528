"""A snapshot directory: one shard per season, searched together."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint.index import StackedPostings
from ..fingerprint.params import FingerprintParams
from ..fingerprint.records import Episode
from .shard import SHARD_SUFFIX, Shard, SnapshotError, open_shard, verify_shard


def shard_path(snapshot_dir: str | os.PathLike[str], season: str) -> Path:
    return Path(snapshot_dir) / f"{season}{SHARD_SUFFIX}"


def shard_paths(snapshot_dir: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a snapshot directory, sorted (temporary files excluded)."""
    d = Path(snapshot_dir)
    return sorted(p for p in d.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))


@dataclass
class Snapshot:
    """Every shard of a snapshot directory, opened read-only.

    Episodes get global indices in shard order, so a hit is ``(global episode, frame)``.
    """

    path: Path
    shards: list[Shard]
    params: FingerprintParams
    _stacked: StackedPostings | None = field(default=None, repr=False)
    _stack_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(
        cls, snapshot_dir: str | os.PathLike[str], *, params: FingerprintParams | None = None
    ) -> Snapshot:
        """Open every shard; all must share one set of params (``params``, if given).

        Raises
        ------
        SnapshotError
            The directory is missing or holds no shard, or a shard is unusable.
        ParamsMismatchError
            Shards disagree with ``params`` or with each other.
        """
        path = Path(snapshot_dir)
        if not path.is_dir():
            raise SnapshotError(f"{path}: no such snapshot directory")
        paths = shard_paths(path)
        if not paths:
            raise SnapshotError(f"{path}: no shards here; build one with `citywok index`")
        shards: list[Shard] = []
        try:
            for p in paths:
                shards.append(
                    open_shard(
                        p, params=params if params else (shards[0].params if shards else None)
                    )
                )
        except BaseException:
            for s in shards:
                s.close()
            raise
        snap = cls(path, shards, shards[0].params)
        snap._index()
        return snap

    def _index(self) -> None:
        self.episodes: list[Episode] = [e for s in self.shards for e in s.episodes]
        bases = np.cumsum([0] + [len(s.episodes) for s in self.shards])
        self._bases = bases[:-1]
        self.total_frames = sum(e.duration_s / self.params.frame_seconds for e in self.episodes)

    @property
    def n_segments(self) -> int:
        """Transcript segments in every shard (0 when built with fingerprints only)."""
        return sum(s.n_segments for s in self.shards)

    def stacked(self) -> StackedPostings:
        """Every shard's postings for one-pass lookups, built on first use (about 2 ms and
        1 MiB per shard; a small shard's key bitmap and offsets are made for it). A server
        calls it before it swaps a version in, so that no request waits for it."""
        if self._stacked is None:
            with self._stack_lock:
                if self._stacked is None:
                    self._stacked = StackedPostings(
                        [s.postings for s in self.shards], self._bases.tolist()
                    )
        return self._stacked

    def lookup(
        self, query: np.ndarray, *, max_hits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hits of ``query`` keys in every shard: (query index, global episode, frame).

        With ``max_hits``, the keys commonest over the whole snapshot are left out so that
        at most that many hits come back (:func:`rarest_keys`). Every shard is searched in
        one vectorised pass (:meth:`stacked`).
        """
        return self.stacked().lookup(query, max_hits=max_hits)

    def info(self) -> dict[str, Any]:
        shards = [
            {
                "file": s.path.name,
                "season": s.season,
                "episodes": len(s.episodes),
                "postings": int(s.meta["n_postings"]),
                "unique_keys": int(s.meta.get("n_unique_keys", 0)),
                "segments": s.n_segments,
                "hours": round(float(s.meta.get("duration_s", 0.0)) / 3600, 3),
                "bytes": s.path.stat().st_size,
                "built_at": s.meta["built_at"],
            }
            for s in self.shards
        ]
        total_bytes = sum(x["bytes"] for x in shards)
        hours = sum(e.duration_s for e in self.episodes) / 3600
        return {
            "path": str(self.path),
            "shards": shards,
            "episodes": len(self.episodes),
            "postings": sum(x["postings"] for x in shards),
            "segments": self.n_segments,
            "hours": round(hours, 3),
            "bytes": total_bytes,
            "bytes_per_hour": round(total_bytes / hours) if hours else None,
            "params": self.params.to_dict(),
        }

    def close(self) -> None:
        self._stacked = None
        for s in self.shards:
            s.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_snapshot(snapshot_dir: str | os.PathLike[str]) -> list[str]:
    """Verify every shard of a directory and their agreement on params."""
    path = Path(snapshot_dir)
    if not path.is_dir():
        return [f"{path}: no such snapshot directory"]
    paths = shard_paths(path)
    if not paths:
        return [f"{path}: no shards here"]
    problems: list[str] = []
    for p in paths:
        problems.extend(verify_shard(p))
    if not problems:
        try:
            Snapshot.open(path).close()
        except SnapshotError as exc:
            problems.append(str(exc))
    return problems
