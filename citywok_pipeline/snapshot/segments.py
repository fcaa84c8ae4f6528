"""Transcript segments inside a season shard: text, times, episode, vector, ANN index, words.

A shard holds its season's segments as column arrays (LMDB values read in place through the
memory map, like the posting arrays), in transcript order:

- ``seg_episode`` (<u4, index into the shard's episode table), ``seg_times`` (<f4, start and
  end per row), ``seg_text`` (UTF-8, concatenated) with ``seg_text_offsets`` (<u4, n + 1);
- ``seg_vectors``: unit vectors, ``float16`` or ``int8`` (then ``seg_scale``, <f4 per row);
- ``seg_ann``: an HNSW graph over the vectors (usearch, inner product, the vectors in it as
  int8 at one fixed scale, keys = rows), serialised by usearch and searched in place: it is
  *viewed* from the memory map (``Index.view`` on the LMDB value), never copied, so server
  workers share it through the page cache like the rest of the shard. Its parameters are in
  the metadata (``segments.ann``); a search takes the nearest rows from it and scores them
  exactly against ``seg_vectors``;
- ``seg_word_keys`` (<u8, sorted), ``seg_word_offsets`` (<u4), ``seg_word_rows`` (<u4) and
  ``seg_word_tf`` (<u1, how often the word is in the row, at most 255): which rows hold each
  word (the xxh64 of a lower-cased ``\\w+`` run), for the keyword filter and BM25;
  ``seg_word_len`` (<u2): the words in each row (BM25's document length).

Shards written before the ANN index (segment format 1, no ``segments.version``) have
``seg_bits`` (packed sign bits) instead of ``seg_ann`` and no ``seg_word_tf``/``seg_word_len``;
they are still read: searched exactly and ranked by BM25 without term frequencies, until
``citywok index`` rebuilds them (:func:`needs_rebuild`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from .quantization import QUANTIZATIONS, QuantizedVectors

if TYPE_CHECKING:
    from usearch.index import Index

# 1: vectors, sign bits, word index (no ANN index, no term frequencies); 2: the ANN index and
# BM25's term frequencies and lengths instead of the sign bits.
SEGMENTS_VERSION = 2

SEGMENT_KEYS = (
    "seg_episode",
    "seg_times",
    "seg_text",
    "seg_text_offsets",
    "seg_vectors",
    "seg_scale",
    "seg_bits",  # format 1 only
    "seg_ann",
    "seg_word_keys",
    "seg_word_offsets",
    "seg_word_rows",
    "seg_word_tf",
    "seg_word_len",
)
_WORD = re.compile(r"\w+")


def words_of(text: str) -> list[str]:
    """The words the keyword filter knows a text by: lower-cased runs of letters and digits."""
    return _WORD.findall(text.lower())


def word_key(word: str) -> int:
    return xxhash.xxh64_intdigest(word.encode("utf-8"))


@dataclass(frozen=True)
class WordIndex:
    """Which rows hold each word, and how often (see the module docstring)."""

    keys: np.ndarray  # (words,) uint64, sorted
    offsets: np.ndarray  # (words + 1,) uint32 into rows
    rows: np.ndarray  # uint32, ascending within a word
    tf: np.ndarray  # uint8, parallel to rows
    lengths: np.ndarray  # (n,) uint16: words per row


def word_index(texts: Sequence[str]) -> WordIndex:
    """The word index of ``texts`` (row ``i`` is ``texts[i]``)."""
    keys: list[int] = []
    rows: list[int] = []
    tf: list[int] = []
    lengths = np.zeros(len(texts), np.uint16)
    for row, text in enumerate(texts):
        words = words_of(text)
        lengths[row] = min(len(words), 65535)
        for word, count in Counter(words).items():
            keys.append(word_key(word))
            rows.append(row)
            tf.append(min(count, 255))
    k = np.array(keys, dtype=np.uint64)
    r = np.array(rows, dtype=np.uint32)
    order = np.lexsort((r, k))
    k, r = k[order], r[order]
    unique, starts = np.unique(k, return_index=True)
    offsets = np.append(starts, len(k)).astype(np.uint32)
    return WordIndex(unique, offsets, r, np.array(tf, np.uint8)[order], lengths)


@dataclass(frozen=True)
class AnnParams:
    """How a shard's HNSW graph is built (recorded in its metadata) and searched.

    ``connectivity`` is HNSW's M (neighbours per node; twice that on the base layer),
    ``expansion_add`` its ef_construction; ``expansion_search`` is the ef a search starts
    from (at least the number of rows asked for). The vectors go into the graph as int8 at
    :func:`ann_scale`: half the bytes of float16 to fetch per visited node, which is what a
    search costs, and the rows found are scored exactly afterwards. Measured in
    benchmarks/RESULTS.md (transcript search).
    """

    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 48

    def to_dict(self) -> dict[str, Any]:
        return {
            "library": "usearch",
            "metric": "ip",
            "dtype": "i8",
            "connectivity": self.connectivity,
            "expansion_add": self.expansion_add,
        }


ANN_PARAMS = AnnParams()


def ann_scale(dim: int) -> float:
    """The fixed int8 scale of a ``dim``-d unit vector in the graph: a component of 6 standard
    deviations (1 / sqrt(dim) each) maps to 127, so rounding costs little and clipping is rare."""
    return 127.0 * math.sqrt(dim) / 6.0


def ann_vectors(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (any float dtype) as the int8 rows the graph holds."""
    x = np.asarray(vectors, dtype=np.float32)
    return np.clip(np.rint(x * ann_scale(x.shape[-1])), -127, 127).astype(np.int8)


def build_ann(vectors: np.ndarray, params: AnnParams = ANN_PARAMS) -> bytes:
    """An HNSW graph over unit rows (keys: the row numbers), serialised.

    One thread: the graph of the same rows is then the same bytes (usearch's insertion is
    deterministic in one thread), as the snapshot's determinism asks.
    """
    from usearch.index import Index

    n, dim = vectors.shape
    index = Index(
        ndim=dim, metric="ip", dtype="i8",
        connectivity=params.connectivity, expansion_add=params.expansion_add,
    )  # fmt: skip
    if n:
        index.add(np.arange(n, dtype=np.uint64), ann_vectors(vectors), threads=1)
    saved = index.save()
    assert saved is not None  # (None only when given a path)
    return bytes(saved)


def view_ann(buffer: Any, *, n: int, dim: int) -> Index:
    """The graph in ``buffer`` (a view into the map: nothing is copied), after checking that
    its header describes ``n`` int8 rows of ``dim`` (usearch trusts its header)."""
    from usearch.index import Index

    meta = Index.metadata(buffer)
    if (
        meta is None
        or int(meta["dimensions"]) != dim
        or int(meta["count_present"]) != n
        or str(meta["kind_scalar"]).rsplit(".", 1)[-1].split(":")[0] != "I8"
        or len(buffer) < n * dim
    ):
        raise ValueError(f"the ANN index does not describe {n} int8 rows of {dim} dimensions")
    index = Index(ndim=dim, metric="ip", dtype="i8")
    index.view(buffer)
    return index


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
    table: SegmentTable, n_episodes: int, *, ann: AnnParams = ANN_PARAMS
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
    words = word_index([table.texts[i] for i in order])
    unit = QuantizedVectors(
        data,
        vectors.quantization,
        None if vectors.scale is None else np.asarray(vectors.scale)[order],
    )
    values = {
        "seg_episode": episode[order].astype("<u4").tobytes(),
        "seg_times": np.stack([table.start, table.end], axis=1)[order].astype("<f4").tobytes(),
        "seg_text": b"".join(encoded),
        "seg_text_offsets": offsets.astype("<u4").tobytes(),
        "seg_vectors": data.astype("<f2" if vectors.quantization == "float16" else "i1").tobytes(),
        "seg_ann": build_ann(unit.dequantize(), ann),
        "seg_word_keys": words.keys.astype("<u8").tobytes(),
        "seg_word_offsets": words.offsets.astype("<u4").tobytes(),
        "seg_word_rows": words.rows.astype("<u4").tobytes(),
        "seg_word_tf": words.tf.astype("u1").tobytes(),
        "seg_word_len": words.lengths.astype("<u2").tobytes(),
    }  # fmt: skip
    if vectors.quantization == "int8":
        assert unit.scale is not None
        values["seg_scale"] = np.asarray(unit.scale).astype("<f4").tobytes()
    meta = {
        "version": SEGMENTS_VERSION,
        "n": n,
        "dim": table.dim,
        "model": table.model,
        "quantization": vectors.quantization,
        "ann": ann.to_dict(),
        "words": int(words.lengths.sum(dtype=np.int64)),
    }
    return values, meta


def segments_version(meta: dict[str, Any]) -> int:
    """The segment format of a shard's ``segments`` metadata (1 before it was recorded)."""
    return int(meta.get("version", 1))


def needs_rebuild(meta: dict[str, Any] | None) -> bool:
    """Whether a shard's segments are of an older format than this build writes (they are
    read, but searched without their ANN index): ``citywok index`` rebuilds such a shard."""
    return bool(meta) and segments_version(meta) < SEGMENTS_VERSION  # type: ignore[arg-type]


@dataclass
class ShardSegments:
    """A shard's segments read in place (views into the memory map).

    ``ann`` is ``None`` for a shard of segment format 1 (then ``bits`` holds its sign bits),
    and so are ``word_tf`` and ``word_len``.
    """

    episode: np.ndarray
    times: np.ndarray
    text_blob: memoryview
    text_offsets: np.ndarray
    vectors: np.ndarray
    scale: np.ndarray | None
    word_keys: np.ndarray
    word_offsets: np.ndarray
    word_rows: np.ndarray
    model: str
    quantization: str
    version: int = SEGMENTS_VERSION
    ann: Index | None = None
    ann_bytes: int = 0
    word_tf: np.ndarray | None = None
    word_len: np.ndarray | None = None
    bits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.episode)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def text(self, row: int) -> str:
        a, b = int(self.text_offsets[row]), int(self.text_offsets[row + 1])
        return bytes(self.text_blob[a:b]).decode("utf-8")

    def _word_slice(self, word: str) -> slice | None:
        key = np.uint64(word_key(word))
        i = int(np.searchsorted(self.word_keys, key))
        if i == len(self.word_keys) or self.word_keys[i] != key:
            return None
        return slice(int(self.word_offsets[i]), int(self.word_offsets[i + 1]))

    def rows_with_word(self, word: str) -> np.ndarray:
        """Rows whose text holds ``word`` (one of :func:`words_of`), ascending."""
        span = self._word_slice(word)
        if span is None:
            return np.zeros(0, np.int64)
        return self.word_rows[span].astype(np.int64)

    def word_postings(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows holding ``word`` and how often each holds it (1 in a format-1 shard)."""
        span = self._word_slice(word)
        if span is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows = self.word_rows[span].astype(np.int64)
        tf = (np.ones(len(rows), np.float32) if self.word_tf is None
              else self.word_tf[span].astype(np.float32))  # fmt: skip
        return rows, tf

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The unit vectors of ``rows`` as float32, int8 rows scaled back."""
        block = np.asarray(self.vectors[rows], dtype=np.float32)
        if self.scale is not None:
            block *= self.scale[rows, None]
        return block

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
    version = segments_version(meta)
    if version > SEGMENTS_VERSION:
        raise ValueError(
            f"segment format {version} is newer than this build reads ({SEGMENTS_VERSION})"
        )

    def arr(key: str, dtype: str) -> np.ndarray:
        buf = values.get(key)
        return np.frombuffer(buf, dtype=dtype) if buf is not None else np.zeros(0, dtype)

    vectors = arr("seg_vectors", "<f2" if kind == "float16" else "i1").reshape(n, dim)
    segments = ShardSegments(
        episode=arr("seg_episode", "<u4"),
        times=arr("seg_times", "<f4").reshape(n, 2),
        text_blob=memoryview(values.get("seg_text") or b""),
        text_offsets=arr("seg_text_offsets", "<u4"),
        vectors=vectors,
        scale=arr("seg_scale", "<f4") if kind == "int8" else None,
        word_keys=arr("seg_word_keys", "<u8"),
        word_offsets=arr("seg_word_offsets", "<u4"),
        word_rows=arr("seg_word_rows", "<u4"),
        model=str(meta["model"]),
        quantization=kind,
        version=version,
    )
    if version == 1:
        segments.bits = arr("seg_bits", "<u8").reshape(-(-dim // 64), n)
    else:
        segments.word_tf = arr("seg_word_tf", "u1")
        segments.word_len = arr("seg_word_len", "<u2")
        buf = values.get("seg_ann")
        if buf is None:
            raise ValueError("no ANN index")
        segments.ann = view_ann(buf, n=n, dim=dim)
        segments.ann_bytes = len(buf)
    return segments


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
    elif (
        segments.bits is not None
        and n
        and not np.array_equal(segments.bits, sign_bits(segments.vectors))
    ):
        problems.append("segment sign bits disagree with the vectors")
    elif len(segments.word_offsets) != len(segments.word_keys) + 1 or (
        len(segments.word_keys)
        and (np.any(np.diff(segments.word_keys) == 0)
             or int(segments.word_offsets[-1]) != len(segments.word_rows)
             or (len(segments.word_rows) and int(segments.word_rows.max()) >= n))
    ):  # fmt: skip
        problems.append("segment word index is inconsistent")
    elif segments.version >= 2 and (
        segments.word_tf is None or len(segments.word_tf) != len(segments.word_rows)
        or segments.word_len is None or len(segments.word_len) != n
        or (len(segments.word_tf) and int(segments.word_tf.min()) == 0)
    ):  # fmt: skip
        problems.append("segment term frequencies are inconsistent")
    elif n and int(segments.episode.max()) >= n_episodes:
        problems.append("a segment names an episode that is not in the table")
    elif segments.scale is not None and len(segments.scale) != n:
        problems.append("segment scales disagree with the metadata")
    elif segments.ann is not None and n:
        # Every row must find itself: the graph holds the rows it claims, under their keys.
        probe = np.unique(np.linspace(0, n - 1, min(n, 64)).astype(np.int64))
        found = segments.ann.search(ann_vectors(segments.vectors_of(probe)), 1, exact=True)
        keys = np.asarray(found.keys).reshape(len(probe), -1)[:, 0].astype(np.int64)
        if np.any(keys >= n):
            problems.append("the ANN index disagrees with the vectors")
        else:
            # A row may find another with the same vector first (a line said in several
            # episodes, a shared intro): that is finding itself. (0.9, not 1: in int8 inner
            # product a row of larger norm can outscore a row's own vector.)
            same = keys == probe
            same |= np.all(
                ann_vectors(segments.vectors_of(keys)) == ann_vectors(segments.vectors_of(probe)),
                axis=1,
            )
            if np.mean(same) < 0.9:
                problems.append("the ANN index disagrees with the vectors")
    return problems
