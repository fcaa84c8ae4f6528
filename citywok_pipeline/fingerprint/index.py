"""Posting arrays and their lookup: the one index layout, in memory or mapped from LMDB.

Postings are ``packed`` uint32 values (``episode << off_bits | anchor_frame``) sorted by
key, with the keys in one of three layouts, whichever is smallest for the shard:

- *flat*: ``keys`` holds one uint32 per posting (``offsets`` is None); a lookup is two
  binary searches (first and one-past-last posting of each key);
- *CSR*: ``keys`` holds each distinct key once and ``offsets`` (uint32, one more than keys)
  where its postings start; a lookup is one binary search over the shorter array;
- *bitmap*: a bit per possible key (2**22 bits, 512 KiB) says which keys are present, and a
  key's rank among them (a count of the bits before it, from a per-word prefix sum) indexes
  ``offsets``. A lookup is three memory reads instead of a ~20-step binary search through
  a map larger than the CPU caches, and the fixed 512 KiB replaces 4 bytes per distinct key:
  smaller and faster once a shard holds more than ~130k distinct keys (a season of a few
  hours). Measured in benchmarks/RESULTS.md.

Either way thousands of query hashes cost a few vectorised numpy passes instead of one
LMDB get each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .hashes import HASH_BITS, Hashes
from .params import ParameterError

MAX_BITS = 32
BITMAP_WORDS = (1 << HASH_BITS) // 64
LAYOUTS = ("flat", "csr", "bitmap")


def keys_to_bitmap(keys: np.ndarray) -> np.ndarray:
    """Distinct 22-bit keys to a bitmap: bit ``k % 64`` of word ``k // 64`` is set for key k.

    Returns
    -------
    np.ndarray, shape (BITMAP_WORDS,), little-endian uint64
    """
    bits = np.zeros(1 << HASH_BITS, dtype=bool)
    bits[keys] = True
    return np.packbits(bits, bitorder="little").view("<u8")


def bitmap_to_keys(bitmap: np.ndarray) -> np.ndarray:
    """The set bits of a bitmap, ascending (the inverse of :func:`keys_to_bitmap`)."""
    bits = np.unpackbits(np.asarray(bitmap, dtype="<u8").view(np.uint8), bitorder="little")
    return np.flatnonzero(bits).astype(np.uint32)


@dataclass(frozen=True)
class PostingArrays:
    """Sorted postings of one shard.

    Attributes
    ----------
    keys : np.ndarray, shape (n,) or (k,), uint32, sorted; None in the bitmap layout
        One per posting (flat) or one per distinct key (CSR); see :meth:`key_array`.
    packed : np.ndarray, shape (n,), uint32
        ``episode << off_bits | frame``; within one key, sorted.
    off_bits : int
        Bits of the frame field; the episode field has ``32 - off_bits``.
    offsets : np.ndarray, shape (k + 1,), uint32, or None (flat)
        Where each distinct key's postings start (CSR and bitmap).
    bitmap : np.ndarray, shape (BITMAP_WORDS,), uint64, or None
        Which keys are present (bitmap layout).
    """

    keys: np.ndarray | None
    packed: np.ndarray
    off_bits: int
    offsets: np.ndarray | None = None
    bitmap: np.ndarray | None = None
    _rank: np.ndarray | None = field(default=None, repr=False, compare=False)
    _derived: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.keys is None) == (self.bitmap is None):
            raise ParameterError("posting arrays need keys or a key bitmap (exactly one)")
        if self.bitmap is not None and (self.offsets is None or self.bitmap.size != BITMAP_WORDS):
            raise ParameterError("the bitmap layout needs offsets and a 2**22-bit bitmap")

    @property
    def layout(self) -> str:
        if self.bitmap is not None:
            return "bitmap"
        return "flat" if self.offsets is None else "csr"

    def __len__(self) -> int:
        return int(self.packed.size)

    def key_array(self) -> np.ndarray:
        """``keys``, materialised from the bitmap in that layout (for rebuilds and checks)."""
        if self.keys is not None:
            return self.keys
        if "keys" not in self._derived:
            assert self.bitmap is not None
            self._derived["keys"] = bitmap_to_keys(self.bitmap)
        return self._derived["keys"]

    def posting_keys(self) -> np.ndarray:
        """The key of every posting (materialised for CSR and bitmap: rebuilds and checks)."""
        if self.offsets is None:
            return self.key_array()
        counts: np.ndarray = np.diff(self.offsets.astype(np.int64))
        return np.repeat(self.key_array(), counts)

    def to_csr(self) -> PostingArrays:
        """The same postings with each distinct key stored once."""
        if self.layout == "csr":
            return self
        if self.layout == "bitmap":
            return PostingArrays(self.key_array(), self.packed, self.off_bits, self.offsets)
        assert self.keys is not None
        keys, starts = np.unique(self.keys, return_index=True)
        offsets = np.append(starts, self.keys.size).astype(np.uint32)
        return PostingArrays(keys.astype(np.uint32), self.packed, self.off_bits, offsets)

    def to_bitmap(self) -> PostingArrays:
        """The same postings with the distinct keys as a bitmap."""
        if self.layout == "bitmap":
            return self
        csr = self.to_csr()
        assert csr.keys is not None and csr.offsets is not None
        return PostingArrays(
            None, csr.packed, csr.off_bits, csr.offsets, bitmap=keys_to_bitmap(csr.keys)
        )

    def to_layout(self, layout: str) -> PostingArrays:
        """The same postings in ``layout`` (``flat`` only from flat: nothing needs it)."""
        if layout == self.layout:
            return self
        if layout == "csr":
            return self.to_csr()
        if layout == "bitmap":
            return self.to_bitmap()
        raise ParameterError(f"cannot convert {self.layout} postings to {layout!r}")

    def nbytes(self) -> int:
        """Bytes stored: the key arrays (keys or bitmap, offsets) and the postings."""
        total = self.packed.nbytes
        for a in (self.keys, self.offsets, self.bitmap):
            total += 0 if a is None else a.nbytes
        return int(total)

    def smallest(self) -> PostingArrays:
        """This shard's postings in whichever layout stores them in the fewest bytes."""
        if self.layout != "flat":
            return self
        candidates = [self, self.to_csr()]
        csr_keys = candidates[1].keys
        # The bitmap costs a fixed 512 KiB against 4 bytes per distinct key in CSR.
        if csr_keys is not None and csr_keys.size * 4 > BITMAP_WORDS * 8:
            candidates.append(candidates[1].to_bitmap())
        return min(candidates, key=lambda p: p.nbytes())

    def ranges(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each query key's postings lie: positions ``[lo, hi)`` (empty if absent).

        Parameters
        ----------
        query : np.ndarray, shape (m,), uint32
            Sorted keys are fastest (the binary searches walk the map in one direction).

        Returns
        -------
        lo, hi : np.ndarray, shape (m,), int64
        """
        if self.bitmap is not None:
            return self._bitmap_ranges(query)
        assert self.keys is not None
        if self.offsets is None:
            lo = np.searchsorted(self.keys, query, side="left").astype(np.int64)
            hi = np.searchsorted(self.keys, query, side="right").astype(np.int64)
            return lo, hi
        if self.keys.size == 0:
            empty = np.zeros(query.size, dtype=np.int64)
            return empty, empty.copy()
        i = np.searchsorted(self.keys, query, side="left")
        i = np.minimum(i, self.keys.size - 1)
        found = self.keys[i] == query
        lo = np.where(found, self.offsets[i], 0).astype(np.int64)
        hi = np.where(found, self.offsets[i + 1], 0).astype(np.int64)
        return lo, hi

    def word_ranks(self) -> np.ndarray:
        """Set bits of the bitmap before each word, shape (BITMAP_WORDS,), int64: a key's rank
        among the present keys is this plus a popcount within its word. Computed on first
        use (a snapshot searched through :class:`StackedPostings` never needs it)."""
        assert self.bitmap is not None
        if self._rank is None:
            counts = np.bitwise_count(self.bitmap).astype(np.int64)
            object.__setattr__(self, "_rank", np.concatenate(([0], np.cumsum(counts)[:-1])))
        assert self._rank is not None
        return self._rank

    def _bitmap_ranges(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.bitmap is not None and self.offsets is not None
        rank = self.word_ranks()
        q = np.asarray(query, dtype=np.int64)
        valid = (q >= 0) & (q < (1 << HASH_BITS))
        q = np.where(valid, q, 0)
        word = self.bitmap[q >> 6]
        bit = (q & 63).astype(np.uint64)
        found = valid & ((word >> bit) & np.uint64(1)).astype(bool)
        below = word & ((np.uint64(1) << bit) - np.uint64(1))
        r = np.where(found, rank[q >> 6] + np.bitwise_count(below), 0)
        lo = np.where(found, self.offsets[r], 0).astype(np.int64)
        hi = np.where(found, self.offsets[np.where(found, r + 1, 0)], 0).astype(np.int64)
        return lo, hi

    def gather(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings in the ranges ``[lo, hi)`` of :meth:`ranges`.

        Returns
        -------
        qi : np.ndarray, int64
            Index into the query of each hit.
        episode : np.ndarray, int64
            Shard-local episode index of each hit.
        frame : np.ndarray, int64
            Anchor frame of each hit in its episode.
        """
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        qi = np.repeat(np.arange(lo.size, dtype=np.int64), counts)
        ends = np.cumsum(counts)
        pos = np.arange(total, dtype=np.int64) + np.repeat(lo - (ends - counts), counts)
        packed = self.packed[pos].astype(np.int64)
        return qi, packed >> self.off_bits, packed & ((1 << self.off_bits) - 1)

    def lookup(
        self, query: np.ndarray, *, max_hits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting of every query key (see :meth:`gather`); with ``max_hits``, the
        commonest keys are left out (:func:`rarest_keys`)."""
        lo, hi = self.ranges(query)
        if max_hits is not None:
            hi = np.where(rarest_keys(hi - lo, max_hits), hi, lo)
        return self.gather(lo, hi)

    def episode_counts(self, n_episodes: int) -> np.ndarray:
        """Number of postings of each episode."""
        return np.bincount(self.packed >> self.off_bits, minlength=n_episodes)

    def episode_hashes(self, episode: int) -> Hashes:
        """The hashes of one episode, recovered from the postings (for incremental rebuilds)."""
        mask = (self.packed >> self.off_bits) == episode
        frames = self.packed[mask] & ((1 << self.off_bits) - 1)
        return Hashes(self.posting_keys()[mask].copy(), frames.astype(np.float32))


_EMPTY = np.zeros(0, dtype=np.int64)


class StackedPostings:
    """The postings of several shards looked up together, as if they were one index.

    Looking keys up shard by shard costs a few dozen small numpy calls per shard, which
    dominates a query on a library of a hundred seasons. Here the key bitmaps of every shard
    are stacked into one array, each word beside its rank, so finding which shards hold
    which query keys, and where their postings start, is one vectorised pass for all of
    them; per shard there remain two gathers (offsets, then postings) for the keys it holds.
    Shards stored in the other layouts (small ones) get a bitmap and offsets made for them.

    The stacked copy costs 1 MiB of memory per shard (each 64-bit word and its rank), and a
    small shard's offsets 4 bytes per distinct key; it is made on construction, typically
    at a snapshot's first query.

    Parameters
    ----------
    parts : sequence of PostingArrays
        One per shard.
    bases : sequence of int
        The global index of each shard's first episode (hits report global episodes).
    sizes : sequence of int, optional
        Each shard's number of episodes: a hit naming an episode beyond it (from a damaged
        shard not yet checked) is dropped, never given to another shard's episode.
    """

    def __init__(
        self,
        parts: Sequence[PostingArrays],
        bases: Sequence[int],
        sizes: Sequence[int] | None = None,
    ) -> None:
        if len(parts) != len(bases) or (sizes is not None and len(sizes) != len(parts)):
            raise ParameterError("one episode base (and size) per part is needed")
        self.bases = np.asarray(bases, dtype=np.int64)
        self._sizes = None if sizes is None else np.asarray(sizes, dtype=np.int64)
        self._off_bits = np.array([p.off_bits for p in parts], dtype=np.int64)
        self._packed = [p.packed for p in parts]
        self._offsets: list[np.ndarray] = []
        # [word, shard] = (the word's bits, the number of set bits before it). Key-major: a
        # query key's entries in every shard lie together (a few cache lines, one page), and
        # its rank comes from the cache line its word was read from.
        self._words = np.zeros((BITMAP_WORDS, len(parts), 2), dtype=np.uint64)
        for i, part in enumerate(parts):
            part = part.to_bitmap()
            bitmap, offsets = part.bitmap, part.offsets
            assert bitmap is not None and offsets is not None
            self._words[:, i, 0] = bitmap
            np.cumsum(np.bitwise_count(bitmap)[:-1], out=self._words[1:, i, 1])
            # What makes the unchecked gathers in lookup safe: every rank the bitmap gives
            # has an offset after it, and the last offset ends the postings.
            n_keys = int(self._words[-1, i, 1]) + int(np.bitwise_count(bitmap[-1]))
            if offsets.size != n_keys + 1 or int(offsets[-1]) != part.packed.size:
                raise ParameterError(f"part {i}: its key offsets do not match its key bitmap")
            self._offsets.append(offsets)

    @property
    def nbytes(self) -> int:
        """Memory of the stacked bitmaps and ranks (the parts' arrays are not counted)."""
        return int(self._words.nbytes)

    def _present(self, query: np.ndarray) -> tuple[np.ndarray, ...]:
        """(part, query index, lo, hi) of every query key present in a part, ordered by part
        and then query index; ``lo:hi`` are the key's postings in that part."""
        if not self._offsets:
            return _EMPTY, _EMPTY, _EMPTY, _EMPTY
        q = np.asarray(query, dtype=np.int64)
        valid = (q >= 0) & (q < (1 << HASH_BITS))
        w = np.where(valid, q >> 6, 0)
        bit = (q & 63).astype(np.uint64)
        entries = self._words[w]  # (query keys, shards, word and rank)
        words = entries[..., 0]
        found = ((words >> bit[:, None]) & np.uint64(1)).astype(bool) & valid[:, None]
        part, qi = np.nonzero(found.T)  # by shard, then query index
        below = words[qi, part] & ((np.uint64(1) << bit[qi]) - np.uint64(1))
        rank = (entries[qi, part, 1] + np.bitwise_count(below)).astype(np.int64)
        # Where each present key's postings start and end: one gather per shard (the offsets
        # of different shards are different arrays), the rest done for them all at once.
        at = rank[:, None] + np.array([0, 1])
        lohi = np.empty(at.shape, dtype=np.uint32)
        bounds = np.searchsorted(part, np.arange(len(self._offsets) + 1)).tolist()
        for i, offsets in enumerate(self._offsets):
            a, b = bounds[i], bounds[i + 1]
            if a != b:
                # "clip" only spares numpy a copy: the ranks are in range (__init__).
                np.take(offsets, at[a:b], out=lohi[a:b], mode="clip")
        lohi64 = lohi.astype(np.int64)
        return part, qi, lohi64[:, 0], lohi64[:, 1]

    def lookup(
        self, query: np.ndarray, *, max_hits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting of every query key in every part: the same hits, in the same order
        (part by part, then by query index), as looking each part up on its own.

        Parameters
        ----------
        query : np.ndarray, shape (m,), uint32
            Sorted keys are fastest.
        max_hits : int, optional
            Keys are left out, commonest over all the parts first, so that at most this many
            hits come back (:func:`rarest_keys`).

        Returns
        -------
        qi, episode, frame : np.ndarray, int64
            Query index, global episode index (its part's base added) and anchor frame.
        """
        part, qi, lo, hi = self._present(query)
        # Never negative, even from the offsets of a damaged shard (np.repeat would raise).
        counts = np.maximum(hi - lo, 0)
        if max_hits is not None and qi.size:
            per_key = np.bincount(qi, weights=counts, minlength=len(query)).astype(np.int64)
            keep = rarest_keys(per_key, max_hits)[qi]
            if not keep.all():
                part, qi, lo, counts = part[keep], qi[keep], lo[keep], counts[keep]
        total = int(counts.sum())
        if total == 0:
            return _EMPTY, _EMPTY, _EMPTY
        ends = np.cumsum(counts)
        pos = np.arange(total, dtype=np.int64) + np.repeat(lo - (ends - counts), counts)
        packed = np.empty(total, dtype=np.uint32)
        first = np.searchsorted(part, np.arange(len(self._packed) + 1))
        hit_bounds = np.concatenate(([0], ends))[first].tolist()
        for i, postings in enumerate(self._packed):
            a, b = hit_bounds[i], hit_bounds[i + 1]
            if a != b:
                np.take(postings, pos[a:b], out=packed[a:b], mode="clip")
        # The fields of each (key, part) entry, then spread over its hits.
        shift = np.repeat(self._off_bits[part], counts)
        local = packed >> shift
        frame = packed & ((np.int64(1) << shift) - 1)
        hit_part = np.repeat(part, counts)
        qi_hits = np.repeat(qi, counts)
        if self._sizes is not None:
            ok = local < self._sizes[hit_part]
            if not ok.all():
                local, frame, hit_part, qi_hits = local[ok], frame[ok], hit_part[ok], qi_hits[ok]
        return qi_hits, local + self.bases[hit_part], frame


def lookup_part_by_part(
    parts: Sequence[PostingArrays],
    bases: Sequence[int],
    query: np.ndarray,
    *,
    max_hits: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`StackedPostings.lookup` done one part at a time: the reference it is tested
    against, and the baseline it is measured against (benchmarks/serve.py)."""
    ranges = [p.ranges(query) for p in parts]
    if max_hits is not None and ranges:
        counts = np.sum([hi - lo for lo, hi in ranges], axis=0)
        keep = rarest_keys(counts, max_hits)
        ranges = [(lo, np.where(keep, hi, lo)) for lo, hi in ranges]
    found = []
    for base, p, (lo, hi) in zip(bases, parts, ranges, strict=True):
        qi, ep, fr = p.gather(lo, hi)
        if qi.size:
            found.append((qi, ep + base, fr))
    if not found:
        return _EMPTY, _EMPTY, _EMPTY
    qi, ep, fr = (np.concatenate(x) for x in zip(*found, strict=True))
    return qi, ep, fr


def rarest_keys(counts: np.ndarray, max_hits: int) -> np.ndarray:
    """Which query keys to look up so that at most ``max_hits`` postings come back.

    The rarest keys are kept first: a key found all over the library says little about where
    a clip is from and costs the most to score (a posting list's length is skewed: low
    frequencies and short steps are far more common). Everything is kept when it fits.

    Parameters
    ----------
    counts : np.ndarray, shape (m,), int
        Postings of each query key (over every shard searched).

    Returns
    -------
    np.ndarray, shape (m,), bool
    """
    counts = np.asarray(counts, dtype=np.int64)
    if int(counts.sum()) <= max_hits:
        return np.ones(counts.size, dtype=bool)
    order = np.argsort(counts, kind="stable")
    keep = np.zeros(counts.size, dtype=bool)
    keep[order[np.cumsum(counts[order]) <= max_hits]] = True
    return keep


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

    def lookup(
        self, query: np.ndarray, *, max_hits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.postings.lookup(query, max_hits=max_hits)
