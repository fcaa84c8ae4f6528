"""A snapshot directory: one shard per season, searched together.

A damaged shard is *refused*, not fatal: it is left out (at open, or as soon as a check finds
it) and the other shards go on answering; :meth:`Snapshot.refused` says which and why.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..fingerprint.index import PostingArrays, StackedPostings
from ..fingerprint.params import FingerprintParams, ParameterError
from ..fingerprint.records import Episode
from .shard import (
    SHARD_SUFFIX,
    CorruptShardError,
    Shard,
    SnapshotError,
    open_shard,
    verify_shard,
)

Checks = Literal["first-use", "background"]


def shard_path(snapshot_dir: str | os.PathLike[str], season: str) -> Path:
    return Path(snapshot_dir) / f"{season}{SHARD_SUFFIX}"


def shard_paths(snapshot_dir: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a snapshot directory, sorted (temporary files excluded)."""
    d = Path(snapshot_dir)
    return sorted(p for p in d.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))


@dataclass
class Snapshot:
    """Every usable shard of a snapshot directory, opened read-only.

    Episodes get global indices in shard order, so a hit is ``(global episode, frame)``.
    """

    path: Path
    shards: list[Shard]
    params: FingerprintParams
    refused_at_open: dict[str, str] = field(default_factory=dict)
    _stacked: StackedPostings | None = field(default=None, repr=False)
    _stack_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checker: threading.Thread | None = field(default=None, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, repr=False)
    _close_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(
        cls,
        snapshot_dir: str | os.PathLike[str],
        *,
        params: FingerprintParams | None = None,
        checks: Checks = "first-use",
    ) -> Snapshot:
        """Open every shard; all must share one set of params (``params``, if given).

        Each shard's small sections are checked against their checksums now. With
        ``checks="first-use"`` the others are checked before their first use (a first query
        reads every shard's postings: about 0.3 s per GB of shards); with ``"background"``
        the posting arrays are used at once and checked by a thread (:meth:`wait_for_checks`),
        what a server does so that it answers within a moment of starting. A shard that
        fails a check is refused (:meth:`refused`) and the others go on answering.

        Raises
        ------
        SnapshotError
            The directory is missing or holds no shard, or every shard is refused.
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
        refused: dict[str, str] = {}
        try:
            for p in paths:
                try:
                    shard = open_shard(
                        p, params=params if params else (shards[0].params if shards else None)
                    )
                except CorruptShardError as exc:
                    refused[p.name] = str(exc)
                    continue
                shards.append(shard)
        except BaseException:
            for s in shards:
                s.close()
            raise
        if not shards:
            raise SnapshotError(f"{path}: every shard is refused: " + "; ".join(refused.values()))
        snap = cls(path, shards, shards[0].params, refused)
        snap._index()
        if checks == "background":
            for s in shards:
                s.defer()
            snap._checker = threading.Thread(
                target=snap._check_all, name="citywok-shard-checks", daemon=True
            )
            snap._checker.start()
        return snap

    def _index(self) -> None:
        self.episodes: list[Episode] = [e for s in self.shards for e in s.episodes]
        sizes = [len(s.episodes) for s in self.shards]
        bases = np.cumsum([0, *sizes])
        self._bases = bases[:-1]
        self._sizes = sizes
        self._shard_of = np.repeat(np.arange(len(self.shards)), sizes)
        self.total_frames = sum(e.duration_s / self.params.frame_seconds for e in self.episodes)

    def _check_all(self) -> None:
        """Check every section not checked yet, shard by shard (the background thread)."""
        for shard in self.shards:
            for name in shard.unchecked():
                with self._close_lock:
                    if self._closing.is_set():
                        return
                    shard.check([name])
                if shard.refused:
                    break

    def wait_for_checks(self, timeout_s: float | None = None) -> dict[str, str]:
        """Wait for the background checks (if any) to end; :meth:`refused` then."""
        if self._checker is not None:
            self._checker.join(timeout_s)
        return self.refused()

    @property
    def checks_pending(self) -> bool:
        """True while the background checks are still running."""
        return self._checker is not None and self._checker.is_alive()

    def refused(self) -> dict[str, str]:
        """The shards left out, file name -> why (a failed checksum, a truncated file...)."""
        out = dict(self.refused_at_open)
        out.update((s.path.name, s.refused) for s in self.shards if s.refused)
        return out

    @property
    def n_segments(self) -> int:
        """Transcript segments in every shard (0 when built with fingerprints only)."""
        return sum(s.n_segments for s in self.shards)

    def stacked(self) -> StackedPostings:
        """Every shard's postings for one-pass lookups, built on first use (about 2 ms and
        1 MiB per shard; a small shard's key bitmap and offsets are made for it). A server
        calls it before it swaps a version in, so that no request waits for it. A shard whose
        postings cannot be read (a failed check) takes no part."""
        if self._stacked is None:
            with self._stack_lock:
                while self._stacked is None:
                    parts = []
                    for s in self.shards:
                        try:
                            parts.append(_NO_POSTINGS if s.refused else s.postings)
                        except CorruptShardError:
                            parts.append(_NO_POSTINGS)
                    try:
                        self._stacked = StackedPostings(parts, self._bases.tolist(), self._sizes)
                    except ParameterError as exc:
                        # Inconsistent arrays: find the damaged shard by its checksums.
                        if not any(s.check() for s in self.shards if not s.refused):
                            raise SnapshotError(f"{self.path}: {exc}") from exc
        return self._stacked

    def lookup(
        self, query: np.ndarray, *, max_hits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hits of ``query`` keys in every shard: (query index, global episode, frame).

        With ``max_hits``, the keys commonest over the whole snapshot are left out so that
        at most that many hits come back (:func:`rarest_keys`). Every shard is searched in
        one vectorised pass (:meth:`stacked`); a shard refused since gives no hits.
        """
        qi, ep, frame = self.stacked().lookup(query, max_hits=max_hits)
        refused = [i for i, s in enumerate(self.shards) if s.refused]
        if refused and ep.size:
            keep = ~np.isin(self._shard_of[ep], refused)
            qi, ep, frame = qi[keep], ep[keep], frame[keep]
        return qi, ep, frame

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
            "refused": self.refused(),
        }

    def close(self) -> None:
        self._closing.set()
        with self._close_lock:  # the background check is between two sections
            self._stacked = None
            for s in self.shards:
                s.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NO_POSTINGS = PostingArrays(np.zeros(0, np.uint32), np.zeros(0, np.uint32), 16)


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
