"""Posting arrays and their lookup: the one index layout, in memory or mapped from LMDB.

Postings are ``packed`` uint32 values (``episode << off_bits | anchor_frame``) sorted by
key, with the keys in one of two layouts, whichever is smaller for the shard:

- *flat*: ``keys`` holds one uint32 per posting (``offsets`` is None); a lookup is two
  binary searches (first and one-past-last posting of each key);
- *CSR*: ``keys`` holds each distinct key once and ``offsets`` (uint32, one more than keys)
  where its postings start; a lookup is one binary search over the shorter array. Large
  shards repeat keys a lot (2.4 postings per key in a 10-hour season), so they use CSR.

Either way thousands of query hashes cost a few vectorised numpy passes instead of one
LMDB get each.
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
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.packed.size)

    def posting_keys(self) -> np.ndarray:
        """The key of every posting (materialised for CSR: for rebuilds and checks only)."""
        if self.offsets is None:
            return self.keys
        counts: np.ndarray = np.diff(self.offsets.astype(np.int64))
        return np.repeat(self.keys, counts)

    def to_csr(self) -> PostingArrays:
        """The same postings with each distinct key stored once."""
        if self.offsets is not None:
            return self
        keys, starts = np.unique(self.keys, return_index=True)
        offsets = np.append(starts, self.keys.size).astype(np.uint32)
        return PostingArrays(keys.astype(np.uint32), self.packed, self.off_bits, offsets)

    def nbytes(self) -> int:
        extra = 0 if self.offsets is None else self.offsets.nbytes
        return int(self.keys.nbytes + self.packed.nbytes + extra)

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
        if self.offsets is None:
            lo = np.searchsorted(self.keys, query, side="left")
            hi = np.searchsorted(self.keys, query, side="right")
        else:
            if self.keys.size == 0:
                empty = np.zeros(0, dtype=np.int64)
                return empty, empty, empty
            i = np.searchsorted(self.keys, query, side="left")
            i = np.minimum(i, self.keys.size - 1)
            found = self.keys[i] == query
            lo = np.where(found, self.offsets[i], 0).astype(np.int64)
            hi = np.where(found, self.offsets[i + 1], 0).astype(np.int64)
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
        return Hashes(self.posting_keys()[mask].copy(), frames.astype(np.float32))


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
