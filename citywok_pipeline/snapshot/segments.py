"""Transcript segments inside a season shard: text, times, episode, vector, and sign bits.

A shard holds its season's segments as column arrays (LMDB values read in place through the
memory map, like the posting arrays), in transcript order:

- ``seg_episode`` (<u4, index into the shard's episode table), ``seg_times`` (<f4, start and
  end per row), ``seg_text`` (UTF-8, concatenated) with ``seg_text_offsets`` (<u4, n + 1);
- ``seg_vectors``: unit vectors, ``float16`` or ``int8`` (then ``seg_scale``, <f4 per row);
- ``seg_bits``: the sign of every component, packed (<u8, ``dim / 64`` words, stored word by
  word: ``words x n``). The Hamming distance between sign bits tracks the angle between
  vectors, so a large search ranks every segment by it in a few vectorised passes and scores
  only the nearest few thousand exactly. The bits need no training, so shards built apart
  (one per season) are searched together;
- ``seg_word_keys`` (<u8, sorted), ``seg_word_offsets`` (<u4) and ``seg_word_rows`` (<u4): which
  rows hold each word (the xxh64 of a lower-cased ``\\w+`` run), for the keyword filter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from ..transcripts.embedder import QUANTIZATIONS, QuantizedVectors

SEGMENT_KEYS = (
    "seg_episode",
    "seg_times",
    "seg_text",
    "seg_text_offsets",
    "seg_vectors",
    "seg_scale",
    "seg_bits",
    "seg_word_keys",
    "seg_word_offsets",
    "seg_word_rows",
)
_WORD = re.compile(r"\w+")


def words_of(text: str) -> list[str]:
    """The words the keyword filter knows a text by: lower-cased runs of letters and digits."""
    return _WORD.findall(text.lower())


def word_key(word: str) -> int:
    return xxhash.xxh64_intdigest(word.encode("utf-8"))


def word_index(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which rows hold each word: sorted word keys, offsets into the rows, the rows."""
    keys: list[int] = []
    rows: list[int] = []
    for row, text in enumerate(texts):
        for word in set(words_of(text)):
            keys.append(word_key(word))
            rows.append(row)
    k = np.array(keys, dtype=np.uint64)
    r = np.array(rows, dtype=np.uint32)
    order = np.lexsort((r, k))
    k, r = k[order], r[order]
    unique, starts = np.unique(k, return_index=True)
    offsets = np.append(starts, len(k)).astype(np.uint32)
    return unique, offsets, r


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


def sign_bits(vectors: np.ndarray) -> np.ndarray:
    """The sign bits of rows, packed word by word.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim)
        Any float or int8 rows; ``dim`` is padded to a multiple of 64 with zero bits.

    Returns
    -------
    np.ndarray, shape (ceil(dim / 64), n), uint64
        Bit ``j % 64`` of word ``j // 64`` of a row is set when its component ``j`` is > 0.
    """
    x = np.asarray(vectors)
    n, dim = x.shape
    words = -(-dim // 64)
    bits = np.zeros((n, words * 64), dtype=bool)
    bits[:, :dim] = x > 0
    packed = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    return np.ascontiguousarray(packed.T)


def hamming(bits: np.ndarray, query_bits: np.ndarray) -> np.ndarray:
    """Hamming distance of every column of ``bits`` (words x n) to ``query_bits`` (words x 1)."""
    words, n = bits.shape
    out = np.zeros(n, np.uint16)
    for w in range(words):
        out += np.bitwise_count(bits[w] ^ query_bits[w, 0])
    return out


def encode_segments(
    table: SegmentTable, n_episodes: int
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The LMDB values and the metadata of a table, in time order within each episode."""
    n = len(table)
    episode = np.asarray(table.episode, dtype=np.int64)
    if n and (episode.min() < 0 or episode.max() >= n_episodes):
        raise ValueError("a segment names an episode that is not in the shard")
    order = np.lexsort((np.asarray(table.start), episode))
    encoded = [table.texts[i].encode("utf-8") for i in order]
    offsets = np.zeros(n + 1, np.uint64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    if offsets[-1] >= 2**32:
        raise ValueError("a shard holds at most 4 GiB of segment text")
    vectors = table.vectors
    data = np.ascontiguousarray(vectors.data[order])
    word_keys, word_offsets, word_rows = word_index([table.texts[i] for i in order])
    values = {
        "seg_episode": episode[order].astype("<u4").tobytes(),
        "seg_times": np.stack([table.start, table.end], axis=1)[order].astype("<f4").tobytes(),
        "seg_text": b"".join(encoded),
        "seg_text_offsets": offsets.astype("<u4").tobytes(),
        "seg_vectors": data.astype("<f2" if vectors.quantization == "float16" else "i1").tobytes(),
        "seg_bits": sign_bits(data).astype("<u8").tobytes(),
        "seg_word_keys": word_keys.astype("<u8").tobytes(),
        "seg_word_offsets": word_offsets.astype("<u4").tobytes(),
        "seg_word_rows": word_rows.astype("<u4").tobytes(),
    }
    if vectors.quantization == "int8":
        assert vectors.scale is not None
        values["seg_scale"] = np.asarray(vectors.scale)[order].astype("<f4").tobytes()
    meta = {
        "n": n,
        "dim": table.dim,
        "model": table.model,
        "quantization": vectors.quantization,
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
    bits: np.ndarray
    word_keys: np.ndarray
    word_offsets: np.ndarray
    word_rows: np.ndarray
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

    def rows_with_word(self, word: str) -> np.ndarray:
        """Rows whose text holds ``word`` (one of :func:`words_of`), ascending."""
        key = np.uint64(word_key(word))
        i = int(np.searchsorted(self.word_keys, key))
        if i == len(self.word_keys) or self.word_keys[i] != key:
            return np.zeros(0, np.int64)
        lo, hi = int(self.word_offsets[i]), int(self.word_offsets[i + 1])
        return self.word_rows[lo:hi].astype(np.int64)

    def rows_of_episode(self, index: int) -> np.ndarray:
        """Rows of one episode, in time order."""
        return np.flatnonzero(self.episode == index)

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
        bits=arr("seg_bits", "<u8").reshape(-(-dim // 64), n),
        word_keys=arr("seg_word_keys", "<u8"),
        word_offsets=arr("seg_word_offsets", "<u4"),
        word_rows=arr("seg_word_rows", "<u4"),
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
    elif n and not np.array_equal(segments.bits, sign_bits(segments.vectors)):
        problems.append("segment sign bits disagree with the vectors")
    elif len(segments.word_offsets) != len(segments.word_keys) + 1 or (
        len(segments.word_keys)
        and (np.any(np.diff(segments.word_keys) == 0)
             or int(segments.word_offsets[-1]) != len(segments.word_rows)
             or (len(segments.word_rows) and int(segments.word_rows.max()) >= n))
    ):  # fmt: skip
        problems.append("segment word index is inconsistent")
    elif n and int(segments.episode.max()) >= n_episodes:
        problems.append("a segment names an episode that is not in the table")
    elif segments.scale is not None and len(segments.scale) != n:
        problems.append("segment scales disagree with the metadata")
    return problems
