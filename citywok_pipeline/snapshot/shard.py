"""One season's LMDB shard: write atomically, open read-only as a memory map, verify.

Layout (one LMDB file, ``subdir=False``, no lock file; shards are immutable once renamed
into place):

- ``meta``: JSON: format and version, fingerprint params, counts, build time, season,
  xxhash64 checksums of the other values, and anything the caller adds (``extra``);
  ``meta_checksum`` the xxhash64 of ``meta`` itself (hex, ASCII).
- ``episodes``: zstd-compressed JSON list of :class:`Episode`; list index = episode index.
- ``keys`` (or ``bitmap``), ``packed`` and, in the CSR and bitmap layouts, ``offsets``: the
  posting arrays (:class:`PostingArrays`), raw little-endian uint32 (the bitmap uint64),
  read in place from the map with zero copies. The layout (``flat``, ``csr`` or ``bitmap``,
  in the metadata) is whichever is smallest.
- ``seg_*``, when the season has transcripts: its segments, their vectors and their sign bits
  (:mod:`.segments`); the metadata's ``segments`` section says how many, of which embedding
  model and quantisation, with their checksums. A shard without them (built with
  fingerprints only) has ``"segments": null``.

Every value but ``meta`` is a *section* with an xxhash64 checksum in the metadata
(:func:`section_checksums`: ``checksums``, and ``segments.checksums``). A reader checks each
section once, before its first use (:meth:`Shard.section`): the small ones (up to
:data:`SMALL_SECTION_BYTES`, and the episode table) when the shard is opened, the others when
first read, or in the background for a server (:meth:`Shard.defer`, then :meth:`Shard.check`).
A section added to the format is checked the same way as soon as its checksum is written
into one of those two maps and it is read through :meth:`Shard.section`.

The posting arrays are not zstd-compressed: lookups touch random places in them, and a
compressed block would have to be inflated on every query; measured in
benchmarks/RESULTS.md (layout comparison).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import xxhash
import zstandard

from ..files import fsync_dir, temp_beside
from ..fingerprint.hashes import Hashes
from ..fingerprint.index import LAYOUTS, PostingArrays, build_postings
from ..fingerprint.params import FingerprintParams, ParameterError
from ..fingerprint.records import Episode
from .segments import (
    SEGMENT_KEYS,
    SegmentTable,
    ShardSegments,
    check_segments,
    decode_segments,
    encode_segments,
)

FORMAT = "citywok-shard"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".lmdb"


class SnapshotError(Exception):
    """A snapshot or shard cannot be used; the message names the file and the reason."""


class ParamsMismatchError(SnapshotError):
    """A shard was built with other fingerprint params than the ones asked for."""


class CorruptShardError(SnapshotError):
    """A shard's bytes are damaged (a checksum mismatch, a truncated file, a missing or
    unreadable record); the message names the file and the section."""


# Sections up to this size are checked when a shard is opened: at most a few milliseconds
# for a snapshot of a thousand hours (the key bitmaps, 512 KiB each, are the largest).
SMALL_SECTION_BYTES = 1 << 20
# The metadata's own checksum (it holds the others), checked at every open.
META_CHECKSUM_KEY = b"meta_checksum"
_EMPTY_CHECKSUM = xxhash.xxh64(b"").hexdigest()


def _checksum(data: bytes | memoryview) -> str:
    return xxhash.xxh64(data).hexdigest()


def section_checksums(meta: dict[str, Any]) -> dict[str, str]:
    """Every checksummed section of a shard: its LMDB key -> xxhash64 hex digest.

    A section whose checksum is that of no bytes may be absent (an empty array is not
    stored)."""
    out = dict(meta.get("checksums") or {})
    out.update((meta.get("segments") or {}).get("checksums") or {})
    return {str(k): str(v) for k, v in out.items()}


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    season: str
    n_episodes: int
    n_postings: int
    size_bytes: int


def write_shard(
    path: str | os.PathLike[str],
    *,
    season: str,
    episodes: Sequence[Episode],
    hashes: Sequence[Hashes],
    params: FingerprintParams,
    extra: dict[str, Any] | None = None,
    segments: SegmentTable | None = None,
    layout: str = "auto",
    built_at: str | None = None,
) -> ShardInfo:
    """Build a shard beside ``path`` and rename it into place.

    The bytes follow from the arguments alone (LMDB pages are zeroed before use): with
    ``built_at`` given (default: now, to the second), the same inputs give the same sha256.

    ``segments`` are the season's transcript segments with their vectors (``episode`` indexes
    ``episodes``); ``None`` builds a fingerprints-only shard. ``layout`` of the posting keys:
    ``auto`` (the smallest), ``flat``, ``csr`` or ``bitmap`` (see fingerprint/index.py).

    A crash at any point leaves whatever was at ``path`` before untouched; readers that have
    the old file open keep reading the old file.
    """
    if len(episodes) != len(hashes):
        raise ValueError("one Hashes per episode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"unknown posting layout {layout!r}; expected auto or {LAYOUTS}")
    postings = build_postings(hashes)
    postings = postings.smallest() if layout == "auto" else postings.to_layout(layout)
    counts = postings.episode_counts(len(episodes))
    episodes = [
        Episode.from_dict({**e.to_dict(), "n_hashes": int(c)})
        for e, c in zip(episodes, counts, strict=True)
    ]
    # The bitmap takes the place of the keys array (under its own name, so that a reader
    # can never mistake one for the other).
    keys_name = "bitmap" if postings.bitmap is not None else "keys"
    if postings.bitmap is not None:
        keys_b = postings.bitmap.astype("<u8").tobytes()
    else:
        assert postings.keys is not None
        keys_b = postings.keys.astype("<u4").tobytes()
    packed_b = postings.packed.astype("<u4").tobytes()
    offsets_b = b"" if postings.offsets is None else postings.offsets.astype("<u4").tobytes()
    episodes_b = zstandard.ZstdCompressor(level=10).compress(
        json.dumps([e.to_dict() for e in episodes]).encode()
    )
    seg_values: dict[str, bytes] = {}
    seg_meta: dict[str, Any] | None = None
    if segments is not None:
        seg_values, seg_meta = encode_segments(segments, len(episodes))
        seg_meta["checksums"] = {k: _checksum(v) for k, v in seg_values.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "params": params.to_dict(),
        "season": season,
        "built_at": built_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_episodes": len(episodes),
        "n_postings": len(postings),
        "n_unique_keys": int(np.unique(postings.key_array()).size) if len(postings) else 0,
        "off_bits": postings.off_bits,
        "layout": postings.layout,
        "duration_s": float(sum(e.duration_s for e in episodes)),
        "checksums": {
            keys_name: _checksum(keys_b),
            "packed": _checksum(packed_b),
            "offsets": _checksum(offsets_b),
            "episodes": _checksum(episodes_b),
        },
        "segments": seg_meta,
        "extra": extra or {},
    }
    meta_b = json.dumps(meta, sort_keys=True).encode()
    map_size = 2 * (len(keys_b) + len(packed_b) + len(offsets_b) + len(episodes_b) + len(meta_b))
    map_size += 2 * sum(len(v) for v in seg_values.values()) + (1 << 20)
    # Written beside its target under a lock (a killed index's leftover is told apart from a
    # shard being written and removed by the next index), then renamed into place.
    with temp_beside(path) as tmp:
        env = lmdb.open(
            str(tmp), subdir=False, map_size=map_size, lock=False, readahead=False, meminit=True
        )
        try:
            with env.begin(write=True) as txn:
                txn.put(keys_name.encode(), keys_b)
                txn.put(b"packed", packed_b)
                if offsets_b:
                    txn.put(b"offsets", offsets_b)
                txn.put(b"episodes", episodes_b)
                for name, value in seg_values.items():
                    txn.put(name.encode(), value)
                txn.put(b"meta", meta_b)
                txn.put(META_CHECKSUM_KEY, _checksum(meta_b).encode())
            env.sync(True)
        finally:
            env.close()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    return ShardInfo(path, season, len(episodes), len(postings), path.stat().st_size)


@dataclass
class Shard:
    """A shard opened read-only: posting arrays are views into the memory map.

    The arrays are looked up on first use, not at open: the first read of a large LMDB value
    can fault in the whole value, and opening a snapshot must stay instant. Each section is
    checked against its checksum once, before it is first used (:meth:`section`); a section
    that fails sets :attr:`refused` and raises :class:`CorruptShardError`.
    """

    path: Path
    meta: dict[str, Any]
    episodes: list[Episode]
    params: FingerprintParams
    _env: Any = field(repr=False)
    _txn: Any = field(repr=False)
    _postings: PostingArrays | None = field(default=None, repr=False)
    _segments: ShardSegments | None = field(default=None, repr=False)
    refused: str | None = None  # why the shard is refused (a failed check), else None
    _checked: set[str] = field(default_factory=set, repr=False)
    _deferred: set[str] = field(default_factory=set, repr=False)
    _check_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def section(self, name: str, *, required: bool = True) -> memoryview | None:
        """A section's bytes (a view into the map), checked against its checksum on first use
        unless :meth:`defer` left it to :meth:`check`. ``None`` for an absent, empty section
        when not ``required``.

        Raises
        ------
        CorruptShardError
            The checksum does not match, or a section the metadata lists is missing.
        """
        try:
            value = self._txn.get(name.encode())
        except lmdb.Error as exc:
            raise self._refuse(f"{self.path}: corrupt shard ({exc})") from exc
        if name not in self._checked and name not in self._deferred:
            self._check_section(name, value)
        if value is None and required:
            raise self._refuse(f"{self.path}: corrupt shard (no {name!r} record)")
        return value  # type: ignore[no-any-return]

    def _refuse(self, reason: str) -> CorruptShardError:
        if self.refused is None:
            self.refused = reason
        return CorruptShardError(reason)

    def _check_section(self, name: str, value: memoryview | None) -> None:
        expected = section_checksums(self.meta).get(name)
        with self._check_lock:
            if name in self._checked:
                return
            if value is None and expected not in (None, _EMPTY_CHECKSUM):
                raise self._refuse(f"{self.path}: corrupt shard (no {name!r} record)")
            if value is not None and expected is None:
                raise self._refuse(f"{self.path}: corrupt shard (no checksum for {name!r})")
            if value is not None and _checksum(value) != expected:
                raise self._refuse(
                    f"{self.path}: checksum mismatch in {name!r}: the shard is corrupt; refused"
                )
            self._checked.add(name)

    def defer(self, names: Sequence[str] | None = None) -> None:
        """Let ``names`` (default: the posting sections) be read before they are checked, so
        that a server answers at once; :meth:`check` checks them (in the background)."""
        posting = [n for n in (self.meta.get("checksums") or {}) if n != "episodes"]
        self._deferred.update(n for n in (posting if names is None else names)
                              if n not in self._checked)  # fmt: skip

    def unchecked(self) -> list[str]:
        """The checksummed sections not checked yet, smallest first."""
        return [n for n in section_checksums(self.meta) if n not in self._checked]

    def check(self, names: Sequence[str] | None = None) -> str | None:
        """Check ``names`` (default: every section not checked yet); the reason the shard is
        refused, or None when every section checked matches."""
        for name in self.unchecked() if names is None else names:
            if self.refused is not None:
                break
            try:
                value = self._txn.get(name.encode())
                self._check_section(name, value)
            except lmdb.Error as exc:
                self._refuse(f"{self.path}: corrupt shard ({exc})")
            except CorruptShardError:
                pass
            self._deferred.discard(name)
        return self.refused

    @property
    def season(self) -> str:
        return str(self.meta["season"])

    @property
    def n_segments(self) -> int:
        """Transcript segments in the shard (0 for a fingerprints-only shard)."""
        seg = self.meta.get("segments")
        return int(seg["n"]) if seg else 0

    @property
    def segments(self) -> ShardSegments | None:
        """The season's transcript segments, read in place; ``None`` without transcripts."""
        seg_meta = self.meta.get("segments")
        if not seg_meta:
            return None
        if self._segments is None:
            try:
                values = {k: self.section(k, required=False) for k in SEGMENT_KEYS}
                self._segments = decode_segments(values, seg_meta)
            except (lmdb.Error, ValueError, KeyError, TypeError) as exc:
                raise self._refuse(f"{self.path}: corrupt shard segments ({exc})") from exc
        return self._segments

    @property
    def postings(self) -> PostingArrays:
        if self._postings is None:
            try:
                layout = self.meta.get("layout", "flat")
                if layout not in LAYOUTS:
                    raise SnapshotError(f"{self.path}: unknown posting layout {layout!r}")
                keys = bitmap = offsets = None
                if layout == "bitmap":
                    bitmap = np.frombuffer(self.section("bitmap"), dtype="<u8")  # type: ignore[arg-type]
                else:
                    keys = np.frombuffer(self.section("keys"), dtype="<u4")  # type: ignore[arg-type]
                packed = np.frombuffer(self.section("packed"), dtype="<u4")  # type: ignore[arg-type]
                if layout in ("csr", "bitmap"):
                    offsets = np.frombuffer(self.section("offsets"), dtype="<u4")  # type: ignore[arg-type]
                self._postings = PostingArrays(
                    keys, packed, int(self.meta["off_bits"]), offsets, bitmap=bitmap
                )
            except (lmdb.Error, ParameterError, ValueError, KeyError, TypeError) as exc:
                raise self._refuse(f"{self.path}: corrupt shard ({exc})") from exc
        return self._postings

    def verify(self) -> list[str]:
        """Check every section's checksum and the arrays' consistency; the problems found
        (none: the shard is sound). What :func:`verify_shard` does on an open shard."""
        problems: list[str] = []
        try:
            meta = self.meta
            for name in self.unchecked():
                try:
                    self.section(name, required=False)
                except CorruptShardError as exc:
                    problems.append(str(exc))
            if problems:
                return problems
            seg_meta = meta.get("segments")
            if seg_meta and self.segments is not None:
                problems.extend(
                    f"{self.path}: {p}"
                    for p in check_segments(self.segments, seg_meta, len(self.episodes))
                )
            p = self.postings
            keys = p.key_array()
            if p.packed.size != meta["n_postings"]:
                problems.append(
                    f"{self.path}: posting arrays disagree with the metadata on their length"
                )
            elif p.offsets is None and keys.size != p.packed.size:
                problems.append(f"{self.path}: posting arrays disagree on their length")
            elif p.offsets is not None and (
                p.offsets.size != keys.size + 1
                or (p.offsets.size and (p.offsets[0] != 0 or p.offsets[-1] != p.packed.size))
                or np.any(np.diff(p.offsets.astype(np.int64)) <= 0)
                or np.any(np.diff(keys.astype(np.int64)) <= 0)
            ):
                problems.append(f"{self.path}: key offsets are inconsistent")
            elif p.packed.size:
                if np.any(keys[1:] < keys[:-1]):
                    problems.append(f"{self.path}: keys are not sorted")
                ep = p.packed >> p.off_bits
                if int(ep.max()) >= len(self.episodes):
                    problems.append(
                        f"{self.path}: a posting names an episode that is not in the table"
                    )
                else:
                    counts = np.bincount(ep, minlength=len(self.episodes))
                    for e, c in zip(self.episodes, counts, strict=True):
                        if e.n_hashes != int(c):
                            problems.append(
                                f"{self.path}: episode {e.episode_id} has {int(c)} postings, "
                                f"its record says {e.n_hashes}"
                            )
            if len(self.episodes) != meta["n_episodes"]:
                problems.append(
                    f"{self.path}: episode table has {len(self.episodes)} rows, meta says {meta['n_episodes']}"
                )
        except (lmdb.Error, SnapshotError) as exc:
            problems.append(
                str(exc)
                if isinstance(exc, SnapshotError)
                else f"{self.path}: corrupt shard ({exc})"
            )
        return problems

    def close(self) -> None:
        self._postings = None
        self._segments = None
        self._txn.abort()
        self._env.close()


def open_shard(path: str | os.PathLike[str], *, params: FingerprintParams | None = None) -> Shard:
    """Open a shard read-only (a memory map: instant, whatever its size).

    The episode table and every section up to :data:`SMALL_SECTION_BYTES` are checked
    against their checksums now; the others before their first use (:meth:`Shard.section`).

    Raises
    ------
    SnapshotError
        The file is missing, not a shard, or of another format version.
    CorruptShardError
        The file is truncated, unreadable, or a section checked now fails its checksum.
    ParamsMismatchError
        ``params`` is given and the shard was built with different ones.
    """
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"{path}: no such shard file")
    try:
        env = lmdb.open(
            str(path), subdir=False, readonly=True, lock=False, readahead=False, max_readers=1
        )
    except lmdb.Error as exc:
        raise CorruptShardError(f"{path}: not a readable LMDB shard ({exc})") from exc
    # Reading a page past the end of a truncated file through the map is SIGBUS, not an
    # exception: check that every page the database claims is in the file before any read.
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    actual = path.stat().st_size
    if actual < needed:
        env.close()
        raise CorruptShardError(
            f"{path}: truncated shard ({actual} bytes, the database needs {needed}); "
            "fetch or rebuild it"
        )
    txn = env.begin(buffers=True)
    try:
        meta_raw = txn.get(b"meta")
        if meta_raw is None:
            raise CorruptShardError(f"{path}: not a CityWok shard (no metadata)")
        meta_sum = txn.get(META_CHECKSUM_KEY)
        # Shards written before the metadata had its own checksum have none to check.
        if meta_sum is not None and bytes(meta_sum).decode("ascii", "replace") != _checksum(
            meta_raw
        ):
            raise CorruptShardError(
                f"{path}: checksum mismatch in 'meta': the shard is corrupt; refused"
            )
        meta = json.loads(bytes(meta_raw))
        if meta.get("format") != FORMAT:
            raise CorruptShardError(f"{path}: not a CityWok shard")
        if meta.get("format_version") != FORMAT_VERSION:
            raise SnapshotError(
                f"{path}: shard format version {meta.get('format_version')} is not supported "
                f"(this build reads version {FORMAT_VERSION}); rebuild it with `citywok index`"
            )
        shard_params = FingerprintParams.from_dict(meta["params"])
        if params is not None and shard_params != params:
            raise ParamsMismatchError(
                f"{path}: built with fingerprint params {shard_params.to_json()}, "
                f"but {params.to_json()} were asked for; rebuild the snapshot with these params"
            )
        shard = Shard(path, meta, [], shard_params, env, txn)
        for name in section_checksums(meta):
            value = txn.get(name.encode())
            if name == "episodes" or value is None or len(value) <= SMALL_SECTION_BYTES:
                shard.section(name, required=False)
        episodes_raw = bytes(shard.section("episodes"))  # type: ignore[arg-type]
        shard.episodes = [
            Episode.from_dict(d)
            for d in json.loads(zstandard.ZstdDecompressor().decompress(episodes_raw))
        ]
    except CorruptShardError:
        txn.abort()
        env.close()
        raise
    except (
        lmdb.Error,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        zstandard.ZstdError,
    ) as exc:
        txn.abort()
        env.close()
        raise CorruptShardError(f"{path}: corrupt shard ({exc})") from exc
    except BaseException:
        txn.abort()
        env.close()
        raise
    return shard


def verify_shard(path: str | os.PathLike[str]) -> list[str]:
    """Check a shard's consistency and checksums; return the problems found (none: valid)."""
    try:
        shard = open_shard(path)
    except SnapshotError as exc:
        return [str(exc)]
    try:
        return shard.verify()
    finally:
        shard.close()
