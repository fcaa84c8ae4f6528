"""One season's LMDB shard: write atomically, open read-only as a memory map, verify.

Layout (one LMDB file, ``subdir=False``, no lock file; shards are immutable once renamed
into place):

- ``meta``: JSON: format and version, fingerprint params, counts, build time, season,
  xxhash64 checksums of the other values, and anything the caller adds (``extra``).
- ``episodes``: zstd-compressed JSON list of :class:`Episode`; list index = episode index.
- ``keys`` (or ``bitmap``), ``packed`` and, in the CSR and bitmap layouts, ``offsets``: the
  posting arrays (:class:`PostingArrays`), raw little-endian uint32 (the bitmap uint64),
  read in place from the map with zero copies. The layout (``flat``, ``csr`` or ``bitmap``,
  in the metadata) is whichever is smallest.
- ``seg_*``, when the season has transcripts: its segments, their vectors and their sign bits
  (:mod:`.segments`); the metadata's ``segments`` section says how many, of which embedding
  model and quantisation, with their checksums. A shard without them (built with
  fingerprints only) has ``"segments": null``.

The posting arrays are not zstd-compressed: lookups touch random places in them, and a
compressed block would have to be inflated on every query; measured in
benchmarks/RESULTS.md (layout comparison).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import xxhash
import zstandard

from ..files import fsync_dir
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


def _checksum(data: bytes | memoryview) -> str:
    return xxhash.xxh64(data).hexdigest()


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
) -> ShardInfo:
    """Build a shard beside ``path`` and rename it into place.

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
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    map_size = 2 * (len(keys_b) + len(packed_b) + len(offsets_b) + len(episodes_b) + len(meta_b))
    map_size += 2 * sum(len(v) for v in seg_values.values()) + (1 << 20)
    try:
        env = lmdb.open(
            str(tmp), subdir=False, map_size=map_size, lock=False, readahead=False, meminit=False
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
            env.sync(True)
        finally:
            env.close()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ShardInfo(path, season, len(episodes), len(postings), path.stat().st_size)


def _get(txn: Any, path: Path, key: bytes) -> memoryview:
    value = txn.get(key)
    if value is None:
        raise SnapshotError(f"{path}: corrupt shard (no {key.decode()!r} record)")
    return value  # type: ignore[no-any-return]


@dataclass
class Shard:
    """A shard opened read-only: posting arrays are views into the memory map.

    The arrays are looked up on first use, not at open: the first read of a large LMDB value
    can fault in the whole value, and opening a snapshot must stay instant.
    """

    path: Path
    meta: dict[str, Any]
    episodes: list[Episode]
    params: FingerprintParams
    _env: Any = field(repr=False)
    _txn: Any = field(repr=False)
    _postings: PostingArrays | None = field(default=None, repr=False)
    _segments: ShardSegments | None = field(default=None, repr=False)

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
                values = {k: self._txn.get(k.encode()) for k in SEGMENT_KEYS}
                self._segments = decode_segments(values, seg_meta)
            except (lmdb.Error, ValueError, KeyError) as exc:
                raise SnapshotError(f"{self.path}: corrupt shard segments ({exc})") from exc
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
                    bitmap = np.frombuffer(_get(self._txn, self.path, b"bitmap"), dtype="<u8")
                else:
                    keys = np.frombuffer(_get(self._txn, self.path, b"keys"), dtype="<u4")
                packed = np.frombuffer(_get(self._txn, self.path, b"packed"), dtype="<u4")
                if layout in ("csr", "bitmap"):
                    offsets = np.frombuffer(_get(self._txn, self.path, b"offsets"), dtype="<u4")
                self._postings = PostingArrays(
                    keys, packed, int(self.meta["off_bits"]), offsets, bitmap=bitmap
                )
            except (lmdb.Error, ParameterError) as exc:
                raise SnapshotError(f"{self.path}: corrupt shard ({exc})") from exc
        return self._postings

    def close(self) -> None:
        self._postings = None
        self._segments = None
        self._txn.abort()
        self._env.close()


def open_shard(path: str | os.PathLike[str], *, params: FingerprintParams | None = None) -> Shard:
    """Open a shard read-only (a memory map: instant, whatever its size).

    Raises
    ------
    SnapshotError
        The file is missing, not a shard, or of another format version.
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
        raise SnapshotError(f"{path}: not a readable LMDB shard ({exc})") from exc
    # Reading a page past the end of a truncated file through the map is SIGBUS, not an
    # exception: check that every page the database claims is in the file before any read.
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    actual = path.stat().st_size
    if actual < needed:
        env.close()
        raise SnapshotError(
            f"{path}: truncated shard ({actual} bytes, the database needs {needed}); "
            "fetch or rebuild it"
        )
    txn = env.begin(buffers=True)
    try:
        meta_raw = txn.get(b"meta")
        if meta_raw is None:
            raise SnapshotError(f"{path}: not a CityWok shard (no metadata)")
        meta = json.loads(bytes(meta_raw))
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"{path}: not a CityWok shard")
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
        episodes_raw = bytes(_get(txn, path, b"episodes"))
        episodes = [
            Episode.from_dict(d)
            for d in json.loads(zstandard.ZstdDecompressor().decompress(episodes_raw))
        ]
    except (lmdb.Error, ValueError, KeyError, TypeError, zstandard.ZstdError) as exc:
        txn.abort()
        env.close()
        raise SnapshotError(f"{path}: corrupt shard ({exc})") from exc
    except BaseException:
        txn.abort()
        env.close()
        raise
    return Shard(path, meta, episodes, shard_params, env, txn)


def verify_shard(path: str | os.PathLike[str]) -> list[str]:
    """Check a shard's consistency and checksums; return the problems found (none: valid)."""
    path = Path(path)
    try:
        shard = open_shard(path)
    except SnapshotError as exc:
        return [str(exc)]
    problems: list[str] = []
    try:
        meta, txn = shard.meta, shard._txn
        layout = meta.get("layout", "flat")
        names = ["bitmap" if layout == "bitmap" else "keys", "packed", "episodes"] + (
            ["offsets"] if layout in ("csr", "bitmap") else []
        )
        for name in names:
            value = txn.get(name.encode())
            if value is None or _checksum(value) != meta["checksums"][name]:
                problems.append(f"{path}: checksum mismatch in {name!r}: the file is corrupt")
        seg_meta = meta.get("segments")
        for name, expected in (seg_meta or {}).get("checksums", {}).items():
            value = txn.get(name.encode())
            if value is None or _checksum(value) != expected:
                problems.append(f"{path}: checksum mismatch in {name!r}: the file is corrupt")
        if problems:
            return problems
        if seg_meta and shard.segments is not None:
            problems.extend(
                f"{path}: {p}"
                for p in check_segments(shard.segments, seg_meta, len(shard.episodes))
            )
        p = shard.postings
        keys = p.key_array()
        if p.packed.size != meta["n_postings"]:
            problems.append(f"{path}: posting arrays disagree with the metadata on their length")
        elif p.offsets is None and keys.size != p.packed.size:
            problems.append(f"{path}: posting arrays disagree on their length")
        elif p.offsets is not None and (
            p.offsets.size != keys.size + 1
            or (p.offsets.size and (p.offsets[0] != 0 or p.offsets[-1] != p.packed.size))
            or np.any(np.diff(p.offsets.astype(np.int64)) <= 0)
            or np.any(np.diff(keys.astype(np.int64)) <= 0)
        ):
            problems.append(f"{path}: key offsets are inconsistent")
        elif p.packed.size:
            if np.any(keys[1:] < keys[:-1]):
                problems.append(f"{path}: keys are not sorted")
            ep = p.packed >> p.off_bits
            if int(ep.max()) >= len(shard.episodes):
                problems.append(f"{path}: a posting names an episode that is not in the table")
            else:
                counts = np.bincount(ep, minlength=len(shard.episodes))
                for e, c in zip(shard.episodes, counts, strict=True):
                    if e.n_hashes != int(c):
                        problems.append(
                            f"{path}: episode {e.episode_id} has {int(c)} postings, "
                            f"its record says {e.n_hashes}"
                        )
        if len(shard.episodes) != meta["n_episodes"]:
            problems.append(
                f"{path}: episode table has {len(shard.episodes)} rows, meta says {meta['n_episodes']}"
            )
    except lmdb.Error as exc:
        problems.append(f"{path}: corrupt shard ({exc})")
    finally:
        shard.close()
    return problems
