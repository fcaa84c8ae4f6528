"""One HNSW graph over the segments of every shard of a snapshot: the library graph.

Each season shard holds its own graph (:mod:`.segments`), which is what a season's rebuild
can write alone. But a query then pays one graph search per season: about 0.15-0.25 ms each
here, so 25 ms at a million segments in 100 seasons (benchmarks/RESULTS.md), where one graph
over all of them answers in a few milliseconds (HNSW's cost grows with the log of its size,
not with the number of graphs). So a snapshot directory may also hold:

- ``library-graph.usearch``: a usearch HNSW graph (inner product, int8 at the shards' fixed
  scale, :func:`.segments.ann_vectors`) over the segments of the shards it names, keyed
  ``ordinal << 32 | row`` (the shard's ordinal in the list below, the row in that shard);
- ``library-graph.json``: which shards it covers (file name, segment count, the checksum of
  the shard's ``seg_vectors``: the graph belongs to those exact vectors, and the shard's
  ordinal in the keys), its parameters, and the xxhash64 of the graph file, checked before
  the graph is first used.

``citywok index`` writes it (:func:`refresh_library_graph`) when the library is large enough
for it to pay (:data:`MIN_SEGMENTS`), after the shards, and ``citywok pull`` builds it from a
pulled version's verified shards before switching to it (the bucket carries only the shards:
no graph bytes from it are ever read); a search uses it only when every shard
it names is open with the same vectors (:func:`open_library_graph`), and otherwise searches
the shards' own graphs, as before, with a note. The graph is a derived file: deleting it
loses nothing but speed; the shards stay the published unit.

A season rebuilt, added or removed does not cost the whole graph again: the graph is updated
in place (the old shard's rows removed, usearch reusing their slots, the new shard's rows
added under a fresh ordinal), which costs what that season's rows cost, until the rows
removed since the graph's last full build reach :data:`MAX_REMOVED_SHARE` of its rows; then
it is built afresh (HNSW removal unlinks a node without relinking its neighbours, so recall
would erode under endless churn). Measured in ``benchmarks/graph_update.py``.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from .segments import AnnParams, ann_vectors, view_ann

if TYPE_CHECKING:
    from usearch.index import Index

    from .directory import Snapshot

GRAPH_FILE = "library-graph.usearch"
INDEX_FILE = "library-graph.json"
LIBRARY_GRAPH_VERSION = 2  # 2: each shard carries its ordinal (the graph is updated in place)
# Below this many segments the shards' own graphs answer in about a millisecond: a library
# graph would cost a rebuild of every segment's node at each index run for little.
MIN_SEGMENTS = 100_000
# Overrides MIN_SEGMENTS for index and pull (a whole number of segments).
MIN_SEGMENTS_ENV = "CITYWOK_LIBRARY_GRAPH_MIN_SEGMENTS"
# How the library graph is built and searched, measured on the simulated million segments in
# 100 shards of benchmarks/search_snapshot.py (benchmarks/RESULTS.md, 2 cores, quiet): with
# M 32, recall@10 0.959 at ef 256 in 2.3 ms p50 (5.1 ms p95), 0.975 at 384 (3.0 ms), 0.900 at
# 128. With M 16 (the shards' M) the graph needed ef 1024 for 0.96 (4.3 ms of CPU): a graph this
# size on clustered vectors needs more links per node. The time is the graph's own search (93%
# at ef 1024); scoring its 20 candidates exactly from the shards and the merge take 0.5 ms.
# M 32 costs a fifth more build CPU (1,060 s for the million on 2 threads) and 660 bytes a
# segment instead of 530.
LIBRARY_PARAMS = AnnParams(connectivity=32, expansion_add=128, expansion_search=256)
# An updated graph is built afresh once the rows removed from it since its last full build
# pass this share of its rows. benchmarks/graph_update.py (200,000 segments, seasons of 10,000
# replaced by new ones, 2 cores): recall@10 0.984-0.994 while under a quarter removed (the
# last library afresh: 0.9945); a run allowed to half had fallen to 0.977 there (afresh 0.993).
# Each update took about 5 s of CPU where a full build took 61 s.
MAX_REMOVED_SHARE = 0.25
_ROW_BITS = 32
_BLOCK = 65_536


def _vectors_checksum(shard: Any) -> str:
    return str(((shard.meta.get("segments") or {}).get("checksums") or {}).get("seg_vectors", ""))


def _eligible(snapshot: Snapshot) -> list[Any]:
    """Shards whose segments a library graph covers: format 2 or later, with segments."""
    from .segments import segments_version

    out = []
    for shard in snapshot.shards:
        seg_meta = shard.meta.get("segments")
        if (
            shard.refused is None
            and seg_meta
            and int(seg_meta["n"])
            and segments_version(seg_meta) >= 2
        ):
            out.append(shard)
    return out


def min_segments_setting(environ: Mapping[str, str] | None = None) -> int:
    """The segments a library needs for a library graph: ``$CITYWOK_LIBRARY_GRAPH_MIN_SEGMENTS``
    when set, else :data:`MIN_SEGMENTS`; ``ValueError`` naming the variable when it is not a
    whole number of at least 1."""
    raw = (os.environ if environ is None else environ).get(MIN_SEGMENTS_ENV, "").strip()
    if not raw:
        return MIN_SEGMENTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MIN_SEGMENTS_ENV}={raw!r}: give a whole number of segments, at least 1")
    return value


def refresh_library_graph(
    snapshot_dir: str | os.PathLike[str],
    *,
    min_segments: int | None = None,
    every_shard: bool = False,
) -> int:
    """Rebuild a snapshot directory's library graph unless it still fits the shards and was
    built with the current parameters; remove it when the library is too small for one
    (``min_segments``, default :func:`min_segments_setting`). Its segment count when it was
    rebuilt, else 0.

    ``every_shard``: build only over all the directory's shards; when one cannot be opened
    (LMDB refuses a file this process already has open, or a read fails) raise
    :class:`.SnapshotError` and leave the graph as it is, rather than build one over the
    others or remove a good one.

    Written aside and renamed, the graph before its description: a build that is killed
    leaves at most a hidden ``.*.tmp`` file, and the shards are searched as before."""
    from .directory import Snapshot
    from .shard import SnapshotError

    directory = Path(snapshot_dir)
    limit = min_segments_setting() if min_segments is None else min_segments
    try:
        snap = Snapshot.open(directory)
    except SnapshotError:
        if every_shard:
            raise
        remove_library_graph(directory)
        return 0
    with snap:
        if every_shard and snap.refused():
            raise SnapshotError(f"{directory}: cannot open " + "; ".join(snap.refused().values()))
        if library_graph_current(snap):
            return 0
        info = build_library_graph(snap, min_segments=limit)
    return int(info["n"]) if info else 0


def remove_library_graph(snapshot_dir: str | os.PathLike[str]) -> None:
    """Delete a directory's library graph (its description first: no reader then uses it)."""
    for name in (INDEX_FILE, GRAPH_FILE):
        with contextlib.suppress(FileNotFoundError):
            (Path(snapshot_dir) / name).unlink()


def library_graph_current(snapshot: Snapshot, *, params: AnnParams = LIBRARY_PARAMS) -> bool:
    """Whether the directory's library graph names exactly the snapshot's eligible shards and
    was built with ``params`` (a graph of older parameters still answers, but is rebuilt)."""
    described = _read_index(snapshot.path)
    if described is None:
        return False
    want = [(s.path.name, s.n_segments, _vectors_checksum(s)) for s in _eligible(snapshot)]
    have = [(d["file"], int(d["n"]), d["vectors"]) for d in described.get("shards", [])]
    return want == have and described.get("ann") == params.to_dict()


def build_library_graph(
    snapshot: Snapshot,
    *,
    params: AnnParams = LIBRARY_PARAMS,
    threads: int | None = None,
    min_segments: int = MIN_SEGMENTS,
    max_removed_share: float = MAX_REMOVED_SHARE,
) -> dict[str, Any] | None:
    """Write the library graph of an open snapshot (see the module docstring); return what was
    written (its description), or ``None`` when the library has fewer than ``min_segments``
    segments in graph-bearing shards (then any old library graph is removed).

    A sound graph already in the directory, of the same parameters, model and dimensions, is
    updated in place: only the shards that changed cost anything (``info["updated"]``), until
    the rows removed since its last full build reach ``max_removed_share`` of its rows.

    Threads: all cores by default (a million segments: a few minutes of CPU); the graph of the
    same shards built with more than one thread is not byte-for-byte the same each time, but
    finds the same rows as well.
    """
    shards = _eligible(snapshot)
    total = sum(s.n_segments for s in shards)
    directory = snapshot.path
    if total < min_segments:
        remove_library_graph(directory)
        return None
    dims = {int(s.meta["segments"]["dim"]) for s in shards}
    models = {str(s.meta["segments"]["model"]) for s in shards}
    if len(dims) > 1 or len(models) > 1:
        remove_library_graph(directory)
        return None
    dim, model = dims.pop(), models.pop()
    t0 = time.perf_counter()
    want = [(s.path.name, s.n_segments, _vectors_checksum(s)) for s in shards]
    update = _open_for_update(directory, params, dim, model)
    kept: dict[tuple[str, int, str], int] = {}  # a shard still in the graph: its ordinal
    gone: list[dict[str, Any]] = []
    removed = 0
    if update is not None:
        index, described = update
        old = {(d["file"], int(d["n"]), d["vectors"]): d for d in described["shards"]}
        gone = [d for k, d in old.items() if k not in set(want)]
        removed = int(described.get("removed_since_build", 0)) + sum(int(d["n"]) for d in gone)
        if removed <= max_removed_share * total:
            kept = {k: int(d["ordinal"]) for k, d in old.items() if k in set(want)}
            for d in gone:
                index.remove(_keys(int(d["ordinal"]), 0, int(d["n"])))
        else:
            update = None
    if update is None:
        index = _new_index(dim, params)
        gone, removed = [], 0
    next_ordinal = max(kept.values(), default=-1) + 1
    added = 0
    entries = []
    for shard, k in zip(shards, want, strict=True):
        if k not in kept:
            kept[k] = next_ordinal
            next_ordinal += 1
            _add_shard(index, shard, kept[k], threads)
            added += shard.n_segments
        entries.append({"file": k[0], "n": k[1], "vectors": k[2], "ordinal": kept[k]})
    if update is not None and len(index) != total:
        # An update that does not leave what the description says (it never should): afresh.
        return build_library_graph(
            snapshot, params=params, threads=threads, min_segments=min_segments,
            max_removed_share=-1.0,
        )  # fmt: skip
    # The graph first, its description last: a reader that finds the new graph with the old
    # description refuses it by its checksum, never reads a half-written one.
    graph_path = directory / GRAPH_FILE
    tmp = directory / f".{GRAPH_FILE}.tmp"
    index.save(str(tmp))
    checksum = _file_checksum(tmp)
    os.replace(tmp, graph_path)
    info = {
        "version": LIBRARY_GRAPH_VERSION,
        "n": total,
        "dim": dim,
        "model": model,
        "ann": params.to_dict(),
        "key_row_bits": _ROW_BITS,
        "checksum": checksum,
        "bytes": graph_path.stat().st_size,
        "build_s": round(time.perf_counter() - t0, 1),
        "updated": update is not None,
        "rows_added": added,
        "rows_removed": sum(int(d["n"]) for d in gone),
        "removed_since_build": removed,
        "shards": entries,
    }
    tmp_index = directory / f".{INDEX_FILE}.tmp"
    tmp_index.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp_index, directory / INDEX_FILE)
    return info


def _new_index(dim: int, params: AnnParams) -> Index:
    from usearch.index import Index

    return Index(
        ndim=dim, metric="ip", dtype="i8",
        connectivity=params.connectivity, expansion_add=params.expansion_add,
    )  # fmt: skip


def _keys(ordinal: int, lo: int, hi: int) -> np.ndarray:
    rows = np.arange(lo, hi, dtype=np.uint64)
    return (np.uint64(ordinal) << np.uint64(_ROW_BITS)) | rows


def _add_shard(index: Index, shard: Any, ordinal: int, threads: int | None) -> None:
    seg = shard.segments
    assert seg is not None
    n = len(seg)
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        index.add(_keys(ordinal, lo, hi), ann_vectors(seg.vectors_of(np.arange(lo, hi))),
                  threads=threads or 0)  # fmt: skip


def _open_for_update(
    directory: Path, params: AnnParams, dim: int, model: str
) -> tuple[Index, dict[str, Any]] | None:
    """The directory's graph read into memory for an update, with its description; ``None``
    when there is none, or it is of another version, parameters, model or size, or damaged
    (its checksum): then it is built afresh."""
    described = _read_index(directory)
    if not described or described.get("version") != LIBRARY_GRAPH_VERSION:
        return None
    try:
        if (
            described.get("ann") != params.to_dict()
            or int(described["dim"]) != dim
            or described.get("model") != model
        ):
            return None
        path = directory / GRAPH_FILE
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != int(described["bytes"]) or xxhash.xxh64(data).hexdigest() != str(
            described["checksum"]
        ):
            return None
        view_ann(memoryview(data), n=int(described["n"]), dim=dim)  # its header, checked
        ordinals = [int(d["ordinal"]) for d in described["shards"]]
        if len(set(ordinals)) != len(ordinals) or not all(
            o >= 0 and int(d["n"]) >= 0 and isinstance(d["file"], str)
            for o, d in zip(ordinals, described["shards"], strict=True)
        ):
            return None
        index = _new_index(dim, params)
        index.load(data)  # the bytes whose checksum was checked, not the file read again
    except (OSError, KeyError, TypeError, ValueError, RuntimeError):
        return None
    if len(index) != int(described["n"]):
        return None
    return index, described


def _file_checksum(path: Path) -> str:
    h = xxhash.xxh64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _read_index(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / INDEX_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class LibraryGraph:
    """A library graph viewed from its file's memory map, with the shards it covers.

    ``parts[ordinal]`` is the caller's index of the shard the graph knows as ``ordinal`` (-1
    for an ordinal no shard has now: the graph was updated in place since).
    """

    index: Index
    parts: np.ndarray
    n: int
    expansion_search: int = LIBRARY_PARAMS.expansion_search
    _buffer: Any = None

    def search(self, q_graph: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(parts, rows)`` of the ``count`` nearest the query (as the graph's int8)."""
        ef = max(self.expansion_search, count)
        if self.index.expansion_search != ef:
            self.index.expansion_search = ef  # type: ignore[misc]
        keys = np.asarray(self.index.search(q_graph, count).keys, dtype=np.uint64)
        ordinal = (keys >> np.uint64(_ROW_BITS)).astype(np.int64)
        rows = (keys & np.uint64((1 << _ROW_BITS) - 1)).astype(np.int64)
        ok = ordinal < len(self.parts)
        parts = self.parts[ordinal[ok]]
        return parts[parts >= 0], rows[ok][parts >= 0]

    def close(self) -> None:
        self._buffer = None


def open_library_graph(
    snapshot: Snapshot, part_of: dict[str, int], sizes: dict[str, int]
) -> tuple[LibraryGraph | None, str | None]:
    """The snapshot's library graph, if it has one that fits its shards, and a note for the
    user when it has one that does not (stale after a shard changed, damaged).

    ``part_of`` maps a shard's file name to the caller's index of it, ``sizes`` to its
    segment count; a graph naming a shard that is not among them, or one whose vectors have
    changed, is not used.
    """
    directory = snapshot.path
    described = _read_index(directory)
    if described is None:
        return None, None
    stale = (
        f"{directory}: the library graph ({INDEX_FILE}) no longer fits the shards; searching "
        "each shard's own graph (slower); `citywok index` rebuilds it"
    )
    try:
        if int(described.get("version", 0)) != LIBRARY_GRAPH_VERSION:
            return None, stale
        by_name = {s.path.name: s for s in snapshot.shards}
        ordinals = [int(d["ordinal"]) for d in described["shards"]]
        if min(ordinals, default=0) < 0 or len(set(ordinals)) != len(ordinals):
            return None, stale
        parts = np.full(max(ordinals, default=-1) + 1, -1, dtype=np.int64)
        for d, ordinal in zip(described["shards"], ordinals, strict=True):
            shard = by_name.get(d["file"])
            if (
                shard is None
                or d["file"] not in part_of
                or sizes.get(d["file"]) != int(d["n"])
                or _vectors_checksum(shard) != d["vectors"]
            ):
                return None, stale
            parts[ordinal] = part_of[d["file"]]
        n, dim = int(described["n"]), int(described["dim"])
        path = directory / GRAPH_FILE
        with open(path, "rb") as f:
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(buffer) != int(described["bytes"]) or xxhash.xxh64(buffer).hexdigest() != str(
            described["checksum"]
        ):
            return None, (
                f"{path}: checksum mismatch: the library graph is damaged; searching each "
                "shard's own graph (slower); `citywok index` rebuilds it"
            )
        index = view_ann(memoryview(buffer), n=n, dim=dim)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return None, f"{stale} ({exc})"
    return LibraryGraph(index, parts, n, _buffer=buffer), None


def verify_library_graph(snapshot: Snapshot) -> list[str]:
    """What is wrong with an open snapshot's library graph: damaged (checksum, size, format) or
    stale (its shards changed since it was built); nothing when it fits, or when there is none.

    ``citywok verify`` reports these; a search never fails on them (it searches the shards' own
    graphs, with a note), and publishing ignores the graph (it is not published).
    """
    if _read_index(snapshot.path) is None:
        return []
    names = [s.path.name for s in snapshot.shards if s.refused is None]
    part_of = {name: i for i, name in enumerate(names)}
    sizes = {s.path.name: s.n_segments for s in snapshot.shards if s.refused is None}
    graph, note = open_library_graph(snapshot, part_of, sizes)
    if graph is None:
        return [note or f"{snapshot.path / INDEX_FILE}: unreadable"]
    graph.close()
    if not library_graph_current(snapshot):
        return [
            f"{snapshot.path}: the library graph ({INDEX_FILE}) does not cover every shard with "
            "segments, or was built with other parameters; `citywok index` rebuilds it"
        ]
    return []
