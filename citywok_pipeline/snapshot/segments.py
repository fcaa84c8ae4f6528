"""Transcript segments inside a season shard: text, times, episode, vector, and a coarse index.

A shard holds its season's segments as column arrays (LMDB values read in place through the
memory map, like the posting arrays):

- ``seg_episode`` (<u4, index into the shard's episode table), ``seg_times`` (<f4, start and
  end per row), ``seg_text`` (UTF-8, concatenated) with ``seg_text_offsets`` (<u4, n + 1);
- ``seg_vectors``: unit vectors, ``float16`` or ``int8`` (then ``seg_scale``, <f4 per row);
- ``seg_centroids`` (<f4, one per list) and ``seg_lists`` (<u4, n_lists + 1): an inverted-file
  index. Rows are stored grouped by list (the list of the nearest centroid, k-means on the
  vectors), so a list is one contiguous slice and a search scores only the lists whose
  centroids are nearest the query. A small shard is one list.

The order of rows is the index order, not the transcript order; ``seg_episode`` and
``seg_times`` say where each row comes from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..transcripts.embedder import QUANTIZATIONS, QuantizedVectors

# Rows per inverted list aimed at: about sqrt(n), within these bounds. Measured in
# benchmarks/RESULTS.md (transcript search).
MIN_LIST_SIZE = 64
MAX_LIST_SIZE = 1024
KMEANS_ITERATIONS = 12
KMEANS_SAMPLE_PER_LIST = 64

SEGMENT_KEYS = (
    "seg_episode",
    "seg_times",
    "seg_text",
    "seg_text_offsets",
    "seg_vectors",
    "seg_scale",
    "seg_centroids",
    "seg_lists",
)


@dataclass(frozen=True)
class SegmentTable:
    """Segments to write into a shard, in any order.

    Attributes
    ----------
    episode : np.ndarray, shape (n,), int
        Index of each segment's episode in the shard's episode table.
    start, end : np.ndarray, shape (n,), float32
        Seconds from the start of the episode.
    texts : sequence of str, length n
    vectors : QuantizedVectors
        ``n`` unit vectors of one dimension.
    model : str
        The embedding model's name: a query must be embedded by the same model.
    """

    episode: np.ndarray
    start: np.ndarray
    end: np.ndarray
    texts: Sequence[str]
    vectors: QuantizedVectors
    model: str

    def __post_init__(self) -> None:
        n = len(self.texts)
        if not (
            len(self.episode) == len(self.start) == len(self.end) == len(self.vectors.data) == n
        ):
            raise ValueError("a segment table's columns must have one row per segment")
        if self.vectors.quantization not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {self.vectors.quantization!r}")
        if self.vectors.data.ndim != 2:
            raise ValueError("segment vectors must be 2-D (n, dim)")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def dim(self) -> int:
        return int(self.vectors.data.shape[1])

    @classmethod
    def concat(cls, tables: Sequence[SegmentTable], *, model: str, dim: int) -> SegmentTable:
        """Join tables of one model; an empty list gives an empty float16 table of ``dim``."""
        tables = [t for t in tables if len(t)]
        for t in tables:
            if t.model != model or t.dim != dim:
                raise ValueError(
                    f"segments embedded with {t.model} ({t.dim}-d) cannot join {model} ({dim}-d)"
                )
        if not tables:
            return cls(
                np.zeros(0, np.uint32), np.zeros(0, np.float32), np.zeros(0, np.float32), [],
                QuantizedVectors(np.zeros((0, dim), np.float16), "float16"), model,
            )  # fmt: skip
        kinds = {t.vectors.quantization for t in tables}
        if len(kinds) == 1:
            kind = kinds.pop()
            data = np.concatenate([t.vectors.data for t in tables])
            scale = (
                np.concatenate([t.vectors.scale for t in tables])  # type: ignore[misc]
                if kind == "int8"
                else None
            )
            vectors = QuantizedVectors(data, kind, scale)
        else:  # mixed: keep the finer one
            vectors = QuantizedVectors(
                np.concatenate([t.vectors.dequantize() for t in tables]).astype(np.float16),
                "float16",
            )
        return cls(
            np.concatenate([np.asarray(t.episode, np.uint32) for t in tables]),
            np.concatenate([np.asarray(t.start, np.float32) for t in tables]),
            np.concatenate([np.asarray(t.end, np.float32) for t in tables]),
            [s for t in tables for s in t.texts],
            vectors,
            model,
        )


def n_lists_for(n: int) -> int:
    """How many inverted lists ``n`` segments get: lists of about sqrt(n) rows, bounded."""
    if n <= MIN_LIST_SIZE * 2:
        return 1
    size = min(max(math.isqrt(n), MIN_LIST_SIZE), MAX_LIST_SIZE)
    return max(1, round(n / size))


def kmeans(
    vectors: np.ndarray, k: int, *, iterations: int = KMEANS_ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means: ``k`` unit centroids and each row's nearest one.

    Trained on a sample of ``KMEANS_SAMPLE_PER_LIST * k`` rows (enough for coarse lists),
    then every row is assigned. Deterministic for a given ``seed``.

    Returns
    -------
    centroids : np.ndarray, shape (k, dim), float32
    assignment : np.ndarray, shape (n,), int64
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if k <= 1 or n <= k:
        c = x.mean(axis=0, keepdims=True) if n else np.zeros((1, x.shape[1]), np.float32)
        c /= max(float(np.linalg.norm(c)), 1e-12)
        return c.astype(np.float32), np.zeros(n, np.int64)
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(n, size=min(n, KMEANS_SAMPLE_PER_LIST * k), replace=False)]
    centroids = sample[rng.choice(len(sample), size=k, replace=False)].copy()
    for _ in range(iterations):
        nearest = _assign(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        counts = np.bincount(nearest, minlength=k)
        empty = counts == 0
        if empty.any():  # reseed an empty list with the rows its neighbours fit worst
            worst = np.argsort(np.einsum("ij,ij->i", sample, centroids[nearest]))[: empty.sum()]
            sums[empty] = sample[worst]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return centroids, _assign(x, centroids)


def _assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), chunk):
        out[i : i + chunk] = np.argmax(x[i : i + chunk] @ centroids.T, axis=1)
    return out


def encode_segments(
    table: SegmentTable, n_episodes: int
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The LMDB values and the metadata of a table, rows grouped by inverted list."""
    n = len(table)
    episode = np.asarray(table.episode, dtype=np.int64)
    if n and (episode.min() < 0 or episode.max() >= n_episodes):
        raise ValueError("a segment names an episode that is not in the shard")
    k = n_lists_for(n)
    centroids, assignment = kmeans(table.vectors.dequantize(), k)
    order = np.argsort(assignment, kind="stable")
    lists = np.zeros(len(centroids) + 1, np.uint32)
    lists[1:] = np.cumsum(np.bincount(assignment, minlength=len(centroids)))
    encoded = [table.texts[i].encode("utf-8") for i in order]
    offsets = np.zeros(n + 1, np.uint64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    if offsets[-1] >= 2**32:
        raise ValueError("a shard holds at most 4 GiB of segment text")
    vectors = table.vectors
    values = {
        "seg_episode": episode[order].astype("<u4").tobytes(),
        "seg_times": np.stack([table.start, table.end], axis=1)[order].astype("<f4").tobytes(),
        "seg_text": b"".join(encoded),
        "seg_text_offsets": offsets.astype("<u4").tobytes(),
        "seg_vectors": np.ascontiguousarray(
            vectors.data[order], dtype="<f2" if vectors.quantization == "float16" else "i1"
        ).tobytes(),
        "seg_centroids": centroids.astype("<f4").tobytes(),
        "seg_lists": lists.astype("<u4").tobytes(),
    }
    if vectors.quantization == "int8":
        assert vectors.scale is not None
        values["seg_scale"] = np.asarray(vectors.scale)[order].astype("<f4").tobytes()
    meta = {
        "n": n,
        "dim": table.dim,
        "model": table.model,
        "quantization": vectors.quantization,
        "n_lists": len(centroids),
    }
    return values, meta


@dataclass
class ShardSegments:
    """A shard's segments read in place (views into the memory map)."""

    episode: np.ndarray
    times: np.ndarray
    text_blob: memoryview
    text_offsets: np.ndarray
    vectors: np.ndarray
    scale: np.ndarray | None
    centroids: np.ndarray
    lists: np.ndarray
    model: str
    quantization: str

    def __len__(self) -> int:
        return len(self.episode)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def text(self, row: int) -> str:
        a, b = int(self.text_offsets[row]), int(self.text_offsets[row + 1])
        return bytes(self.text_blob[a:b]).decode("utf-8")

    def rows_of_episode(self, index: int) -> np.ndarray:
        """Rows of one episode, in time order."""
        rows = np.flatnonzero(self.episode == index)
        return rows[np.argsort(self.times[rows, 0], kind="stable")]

    def table(self, rows: np.ndarray, *, episode: int | np.ndarray | None = None) -> SegmentTable:
        """These rows as a table (to carry segments into a rebuilt shard); ``episode``
        replaces their episode indices."""
        rows = np.asarray(rows, dtype=np.int64)
        data = np.array(self.vectors[rows])
        scale = None if self.scale is None else np.array(self.scale[rows])
        return SegmentTable(
            np.full(len(rows), episode, np.uint32)
            if isinstance(episode, int)
            else np.array(self.episode[rows] if episode is None else episode, np.uint32),
            np.array(self.times[rows, 0]),
            np.array(self.times[rows, 1]),
            [self.text(int(r)) for r in rows],
            QuantizedVectors(data, self.quantization, scale),
            self.model,
        )


def decode_segments(values: dict[str, Any], meta: dict[str, Any]) -> ShardSegments:
    """Views over a shard's segment values (``values[key]`` a buffer, missing when empty)."""
    n, dim = int(meta["n"]), int(meta["dim"])
    kind = str(meta["quantization"])

    def arr(key: str, dtype: str) -> np.ndarray:
        buf = values.get(key)
        return np.frombuffer(buf, dtype=dtype) if buf is not None else np.zeros(0, dtype)

    vectors = arr("seg_vectors", "<f2" if kind == "float16" else "i1").reshape(n, dim)
    return ShardSegments(
        episode=arr("seg_episode", "<u4"),
        times=arr("seg_times", "<f4").reshape(n, 2),
        text_blob=memoryview(values.get("seg_text") or b""),
        text_offsets=arr("seg_text_offsets", "<u4"),
        vectors=vectors,
        scale=arr("seg_scale", "<f4") if kind == "int8" else None,
        centroids=arr("seg_centroids", "<f4").reshape(-1, dim),
        lists=arr("seg_lists", "<u4"),
        model=str(meta["model"]),
        quantization=kind,
    )


def check_segments(segments: ShardSegments, meta: dict[str, Any], n_episodes: int) -> list[str]:
    """Consistency problems of a shard's segments (none: fine)."""
    n = int(meta["n"])
    problems = []
    if len(segments.episode) != n or len(segments.times) != n or len(segments.vectors) != n:
        problems.append(f"segment columns disagree with the metadata ({n} segments)")
    elif len(segments.text_offsets) != n + 1 or (
        n and (np.any(np.diff(segments.text_offsets.astype(np.int64)) < 0)
               or int(segments.text_offsets[-1]) != len(segments.text_blob))
    ):  # fmt: skip
        problems.append("segment text offsets are inconsistent")
    elif len(segments.lists) != len(segments.centroids) + 1 or (
        len(segments.lists) and (int(segments.lists[0]) != 0 or int(segments.lists[-1]) != n
                                 or np.any(np.diff(segments.lists.astype(np.int64)) < 0))
    ):  # fmt: skip
        problems.append("segment index lists are inconsistent")
    elif n and int(segments.episode.max()) >= n_episodes:
        problems.append("a segment names an episode that is not in the table")
    elif segments.scale is not None and len(segments.scale) != n:
        problems.append("segment scales disagree with the metadata")
    return problems
