"""Posting arrays and their lookup: the one index layout, in memory or mapped from LMDB.

Postings are kept as two parallel arrays sorted by key: ``keys`` (uint32 hashes) and
``packed`` (uint32, ``episode << off_bits | anchor_frame``). A lookup is two vectorised
``searchsorted`` calls and a gather, so thousands of query hashes cost one numpy pass
instead of one LMDB get each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .hashes import Hashes
from .params import ParameterError

MAX_BITS = 32


@dataclass(frozen=True)
class PostingArrays:
    """Sorted postings of one shard.

    Attributes
    ----------
    keys : np.ndarray, shape (n,), uint32, sorted
    packed : np.ndarray, shape (n,), uint32
        ``episode << off_bits | frame``; within one key, sorted.
    off_bits : int
        Bits of the frame field; the episode field has ``32 - off_bits``.
    """

    keys: np.ndarray
    packed: np.ndarray
    off_bits: int

    def __len__(self) -> int:
        return int(self.keys.size)

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting of every query key.

        Parameters
        ----------
        query : np.ndarray, shape (m,), uint32

        Returns
        -------
        qi : np.ndarray, int64
            Index into ``query`` of each hit.
        episode : np.ndarray, int64
            Shard-local episode index of each hit.
        frame : np.ndarray, int64
            Anchor frame of each hit in its episode.
        """
        lo = np.searchsorted(self.keys, query, side="left")
        hi = np.searchsorted(self.keys, query, side="right")
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        qi = np.repeat(np.arange(query.size, dtype=np.int64), counts)
        ends = np.cumsum(counts)
        pos = np.arange(total, dtype=np.int64) + np.repeat(lo - (ends - counts), counts)
        packed = self.packed[pos].astype(np.int64)
        return qi, packed >> self.off_bits, packed & ((1 << self.off_bits) - 1)

    def episode_counts(self, n_episodes: int) -> np.ndarray:
        """Number of postings of each episode."""
        return np.bincount(self.packed >> self.off_bits, minlength=n_episodes)

    def episode_hashes(self, episode: int) -> Hashes:
        """The hashes of one episode, recovered from the postings (for incremental rebuilds)."""
        mask = (self.packed >> self.off_bits) == episode
        frames = self.packed[mask] & ((1 << self.off_bits) - 1)
        return Hashes(self.keys[mask].copy(), frames.astype(np.float32))


def build_postings(per_episode: Sequence[Hashes]) -> PostingArrays:
    """Sort the hashes of a list of episodes into posting arrays.

    Episode ``i`` of the list gets index ``i``. Anchor times are rounded to whole frames and
    duplicate (key, episode, frame) postings are dropped.
    """
    n_eps = len(per_episode)
    ep_bits = max(1, int(np.ceil(np.log2(max(n_eps, 2)))))
    off_bits = MAX_BITS - ep_bits
    keys_parts, packed_parts = [], []
    for ep, h in enumerate(per_episode):
        frames = np.rint(h.times).astype(np.int64)
        if frames.size and (frames.min() < 0 or frames.max() >= (1 << off_bits)):
            raise ParameterError(
                f"episode {ep}: anchor frame {int(frames.max())} does not fit in {off_bits} bits"
            )
        keys_parts.append(h.keys.astype(np.uint64))
        packed_parts.append((np.uint64(ep) << np.uint64(off_bits)) | frames.astype(np.uint64))
    if not keys_parts:
        empty = np.zeros(0, dtype=np.uint32)
        return PostingArrays(empty, empty.copy(), off_bits)
    combined = (np.concatenate(keys_parts) << np.uint64(32)) | np.concatenate(packed_parts)
    combined = np.unique(combined)  # sorts by (key, episode, frame) and drops duplicates
    return PostingArrays(
        keys=(combined >> np.uint64(32)).astype(np.uint32),
        packed=(combined & np.uint64(0xFFFFFFFF)).astype(np.uint32),
        off_bits=off_bits,
    )


class MemoryIndex:
    """An in-memory index with the same interface as a snapshot (for tests and small jobs)."""

    def __init__(self, params, episodes, hashes: Sequence[Hashes]) -> None:  # type: ignore[no-untyped-def]
        self.params = params
        self.episodes = list(episodes)
        self.postings = build_postings(hashes)
        self.total_frames = sum(e.duration_s for e in self.episodes) / params.frame_seconds

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.postings.lookup(query)
