"""Transcript search in a snapshot: "where do they say X?" over every shard's segments.

Three rankings, one per ``mode``:

- ``semantic``: the query is embedded with the model the segments were embedded with, and
  segments are ranked by cosine similarity (unit vectors, so a dot product). Each shard's
  HNSW graph (:mod:`citywok_pipeline.snapshot.segments`, usearch, viewed in place in the
  memory map) gives its nearest rows, which are then scored exactly against the stored vectors;
  the shards' top ``limit`` are merged by those exact scores, so the merge itself loses
  nothing. A shard without a graph (built before it, segment format 1) is scored exhaustively.
- ``keyword``: BM25 over the segments' words (the shards' word index with term frequencies and
  lengths). Its statistics (segment count, document frequencies, mean length) are summed over
  every shard before scoring, so the scores are the library's BM25, comparable across shards,
  and the merge is exact too.
- ``hybrid`` (the default): both lists fused by reciprocal-rank fusion (each segment scores
  ``sum 1 / (RRF_K + rank)`` over the lists it is in, :data:`FUSION_DEPTH` deep), so a rare word
  the embedding ranks low ("where do they say Vesuvius") still comes first, and a paraphrase
  sharing no word still ranks by meaning.

Keywords (``keywords=``) filter first in every mode: only segments whose text holds every
keyword (any case, as whole words; a phrase in order) are ranked, and those are scored
exactly. Query embedding is separate (:attr:`SegmentSearcher.embedder`, or any vector given to
:meth:`SegmentSearcher.search_vector`): the ranking never needs the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..snapshot.directory import Snapshot
from ..snapshot.library_graph import LibraryGraph, open_library_graph
from ..snapshot.segments import ANN_PARAMS, ShardSegments, ann_vectors, needs_rebuild, words_of
from ..snapshot.shard import CorruptShardError, Shard
from .embedder import Embedder, load_query_embedder
from .errors import TranscriptError
from .records import SearchHit

Mode = Literal["hybrid", "semantic", "keyword"]
MODES: tuple[str, ...] = ("hybrid", "semantic", "keyword")
DEFAULT_MODE: Mode = "hybrid"
DEFAULT_LIMIT = 10
MAX_QUERY_CHARS = 1000
# Reciprocal-rank fusion: the usual constant (Cormack et al. 2009), and how deep each list goes.
RRF_K = 60
FUSION_DEPTH = 50
# BM25 (the Lucene / bm25s defaults).
BM25_K1 = 1.2
BM25_B = 0.75
# Query words BM25 leaves out: Lucene's English stop set (StopAnalyzer). Without it a query's
# "the" or "and" puts lines that share only those at the top of the word ranking, and fusion
# then lifts them over a paraphrase that shares no word. The index keeps them (for keywords).
STOP_WORDS = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
     "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there",
     "these", "they", "this", "to", "was", "will", "with")
)  # fmt: skip
# The graph's candidates per shard are rescored exactly; a few more than asked for absorb the
# rounding of the int8 vectors in the graph.
_RESCORE_EXTRA = 10
_EXACT_BLOCK = 32_768
# A larger graph needs a wider search for the same recall: on the simulated segments of
# benchmarks/search_snapshot.py, ef 48 keeps recall@10 0.99 in a 10,000-segment shard but 0.71
# in one of 300,000, and a 100,000-segment graph reaches 0.97 at ef 128 (0.35 ms). So a shard
# of n segments is searched with ef at least n / 500.
_ROWS_PER_EF = 500

Found = tuple[int, int, float]  # (part, row, score)


def check_query(text: str) -> str:
    """``text`` if it can be searched, else :class:`TranscriptError` saying why (empty, or
    longer than :data:`MAX_QUERY_CHARS` characters)."""
    if not isinstance(text, str) or not text.strip():
        raise TranscriptError("the search text is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise TranscriptError(
            f"the search text is {len(text):,} characters long; at most {MAX_QUERY_CHARS:,}"
        )
    return text


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise TranscriptError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode  # type: ignore[return-value]


@dataclass
class _Part:
    shard: Shard
    segments: ShardSegments


class SegmentSearcher:
    """Search the transcript segments of an open snapshot; cheap to build, reusable.

    Parameters
    ----------
    snapshot : Snapshot
        Kept open by the caller for the searcher's lifetime.
    embedder : Embedder, optional
        Embeds the queries; default: :func:`load_query_embedder` with no path (the packaged
        model), loaded at the first text query. It must be the model the segments were
        embedded with.
    expansion_search : int
        HNSW's ef: candidates each shard's graph keeps while it searches (at least the number
        of rows asked for). Higher finds more of the true nearest, slower.

    Raises
    ------
    TranscriptError
        The shards' segments were embedded with different models, or with another model
        than ``embedder``.

    Attributes
    ----------
    notes : list of str
        What the caller should tell the user: shards of an older format (searched without
        their ANN index, exhaustively, until ``citywok index`` rebuilds them).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        embedder: Embedder | None = None,
        *,
        expansion_search: int = ANN_PARAMS.expansion_search,
    ) -> None:
        self.snapshot = snapshot
        self.expansion_search = expansion_search
        self._parts: list[_Part] = []
        old = []
        for shard in snapshot.shards:
            try:
                segments = shard.segments
            except CorruptShardError:
                continue  # refused: snapshot.refused() names it
            if segments is None or not len(segments):
                continue
            self._parts.append(_Part(shard, segments))
            if needs_rebuild(shard.meta.get("segments")):
                old.append(shard.season)
        models = {(p.segments.model, p.segments.dim) for p in self._parts}
        if len(models) > 1:
            raise TranscriptError(
                f"{snapshot.path}: shards were embedded with different models "
                f"({', '.join(f'{m} ({d}-d)' for m, d in sorted(models))}); rebuild them with one"
            )
        self.model, self.dim = models.pop() if models else ("", 0)
        if embedder is not None and self._parts:
            self._check(embedder)
        self._embedder = embedder
        self.n_segments = sum(len(p.segments) for p in self._parts)
        self.notes: list[str] = []
        if old:
            self.notes.append(
                f"{snapshot.path}: {len(old)} shard(s) ({', '.join(sorted(old)[:3])}"
                f"{', ...' if len(old) > 3 else ''}) were built before the ANN index and BM25 "
                "weights: they are searched exhaustively (slower) and ranked by words without "
                "term frequencies; rebuild them with `citywok index`"
            )
        self._bm25_stats: tuple[int, float] | None = None
        self.library: LibraryGraph | None = None
        if len(self._parts) > 1:
            names = {p.shard.path.name: i for i, p in enumerate(self._parts)}
            sizes = {p.shard.path.name: len(p.segments) for p in self._parts}
            self.library, note = open_library_graph(snapshot, names, sizes)
            if note:
                self.notes.append(note)
        # Parts the library graph does not cover (an older format...) keep their own graphs.
        covered = set() if self.library is None else set(self.library.parts.tolist())
        self._outside_library = [i for i in range(len(self._parts)) if i not in covered]

    def _check(self, embedder: Embedder) -> None:
        if (embedder.model_name, embedder.dim) != (self.model, self.dim):
            raise TranscriptError(
                f"{self.snapshot.path}: segments were embedded with {self.model} ({self.dim}-d), "
                f"but the query model is {embedder.model_name} ({embedder.dim}-d); "
                "search with the model that built the snapshot"
            )

    def part(self, i: int) -> tuple[Shard, ShardSegments]:
        """The shard and segments a ``(part, row, score)`` triple's part names."""
        p = self._parts[i]
        return p.shard, p.segments

    def parts(self) -> list[tuple[Shard, ShardSegments]]:
        """Every shard with segments, as :meth:`part` numbers them."""
        return [(p.shard, p.segments) for p in self._parts]

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_query_embedder()
            if self._parts:
                self._check(self._embedder)
        return self._embedder

    def search(
        self,
        text: str,
        *,
        limit: int = DEFAULT_LIMIT,
        keywords: Sequence[str] = (),
        exact: bool = False,
        mode: str = DEFAULT_MODE,
    ) -> list[SearchHit]:
        """The ``limit`` segments best for ``text``, best first (empty when there are none).

        ``mode``: ``hybrid`` (default), ``semantic`` or ``keyword`` (see the module doc); a
        hit's ``score`` is the ranking's own: the fused score, the cosine similarity, or the
        BM25 score. A hybrid hit also carries its cosine similarity (``extra["cosine"]``) and,
        where its words matched, its BM25 score (``extra["bm25"]``). ``keywords``: only segments holding
        each of them, as whole words, ignoring case. ``exact``: score every segment's vector
        (no graph), whatever the snapshot's size.
        """
        if limit < 1:
            raise TranscriptError(f"limit must be at least 1, got {limit}")
        check_query(text)
        mode = check_mode(mode)
        if not self._parts:
            return []
        query = None if mode == "keyword" else self.embedder.embed([text])[0]
        return self.rank(text, query, limit=limit, keywords=keywords, exact=exact, mode=mode)

    def rank(
        self,
        text: str,
        query: np.ndarray | None,
        *,
        limit: int = DEFAULT_LIMIT,
        keywords: Sequence[str] = (),
        exact: bool = False,
        mode: str = DEFAULT_MODE,
    ) -> list[SearchHit]:
        """:meth:`search` with the query already embedded (``query``, a unit vector of the
        segments' model; ``None`` in keyword mode): the ranking alone, no model needed."""
        mode = check_mode(mode)
        if mode == "keyword":
            return self.hits(self.search_words(text, limit=limit, keywords=keywords))
        if query is None:
            raise TranscriptError(f"{mode} search needs the query's vector")
        if mode == "semantic":
            found = self.search_vector(query, limit=limit, keywords=keywords, exact=exact)
            return self.hits(found)
        depth = max(limit, FUSION_DEPTH)
        by_meaning = self.search_vector(query, limit=depth, keywords=keywords, exact=exact)
        by_words = self.search_words(text, limit=depth, keywords=keywords)
        fused = fuse([by_meaning, by_words])[:limit]
        cosine = {(p, r): s for p, r, s in by_meaning}
        bm25 = {(p, r): s for p, r, s in by_words}
        missing = [(p, r) for p, r, _ in fused if (p, r) not in cosine]
        for (p, r), s in zip(missing, self._cosines(missing, query), strict=True):
            cosine[(p, r)] = s
        hits = self.hits(fused)
        for hit, (p, r, _) in zip(hits, fused, strict=True):
            hit.extra["cosine"] = cosine[(p, r)]
            if (p, r) in bm25:
                hit.extra["bm25"] = bm25[(p, r)]
        return hits

    # -- by meaning -----------------------------------------------------------------------

    def search_vector(
        self,
        query: np.ndarray,
        *,
        limit: int = DEFAULT_LIMIT,
        keywords: Sequence[str] = (),
        exact: bool = False,
    ) -> list[Found]:
        """``(part, row, score)`` of the segments nearest a unit query vector, best first;
        ``score`` is the cosine similarity."""
        if not self._parts:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise TranscriptError(
                f"a query vector of {q.shape[0]} dimensions; the segments have {self.dim}"
            )
        found: list[tuple[int, np.ndarray, np.ndarray]] = []  # (part, rows, scores)
        q_graph = None
        each: Sequence[int] = range(len(self._parts))
        if self.library is not None and not keywords and not exact:
            # One search of the library graph instead of one per shard; its rows are scored
            # exactly like a shard's, per part.
            q_graph = ann_vectors(q)
            parts, rows = self.library.search(q_graph, limit + _RESCORE_EXTRA)
            for i in np.unique(parts).tolist():
                mine = rows[parts == i]
                found.append((i, mine, self._parts[i].segments.vectors_of(mine) @ q))
            each = self._outside_library
        for i in each:
            part = self._parts[i]
            if keywords:
                rows = self._keyword_rows(i, keywords)
            elif exact or part.segments.ann is None:
                rows = self._nearest_exhaustive(part.segments, q, limit)
            else:
                if q_graph is None:
                    q_graph = ann_vectors(q)  # once, not per shard
                rows = self._nearest_by_graph(part.segments, q_graph, limit)
            if rows.size:
                found.append((i, rows, part.segments.vectors_of(rows) @ q))
        return _top(found, limit)

    def _nearest_by_graph(self, seg: ShardSegments, q_graph: np.ndarray, limit: int) -> np.ndarray:
        """Rows the shard's graph finds nearest ``q_graph`` (the query as the graph's int8)."""
        assert seg.ann is not None
        count = min(len(seg), limit + _RESCORE_EXTRA)
        ef = max(self.expansion_search, count, len(seg) // _ROWS_PER_EF)
        if seg.ann.expansion_search != ef:
            seg.ann.expansion_search = ef  # type: ignore[misc]
        keys = np.asarray(seg.ann.search(q_graph, count).keys, dtype=np.int64)
        return keys[(keys >= 0) & (keys < len(seg))]

    def _nearest_exhaustive(self, seg: ShardSegments, q: np.ndarray, limit: int) -> np.ndarray:
        """The ``limit`` rows nearest ``q`` by scoring every row (a block at a time)."""
        n = len(seg)
        if n <= limit:
            return np.arange(n)
        if seg.scale is None:
            from usearch.index import MetricKind
            from usearch.index import search as brute_force

            # SIMD float16 dot products over the memory-mapped rows, no copy.
            found = brute_force(
                seg.vectors, q.astype(np.float16), limit, MetricKind.IP, exact=True, threads=1
            )
            return np.asarray(found.keys, dtype=np.int64)
        best_rows, best_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for lo in range(0, n, _EXACT_BLOCK):
            rows = np.arange(lo, min(n, lo + _EXACT_BLOCK))
            scores = seg.vectors_of(rows) @ q
            keep = np.argpartition(-scores, limit - 1)[:limit] if len(rows) > limit else slice(None)
            best_rows = np.concatenate([best_rows, rows[keep]])
            best_scores = np.concatenate([best_scores, scores[keep]])
        keep = np.argpartition(-best_scores, limit - 1)[:limit]
        return best_rows[keep]

    def _cosines(self, found: Sequence[tuple[int, int]], query: np.ndarray) -> list[float]:
        q = np.asarray(query, dtype=np.float32)
        return [float(self._parts[p].segments.vectors_of(np.array([r]))[0] @ q) for p, r in found]

    # -- by words --------------------------------------------------------------------------

    def search_words(
        self, text: str, *, limit: int = DEFAULT_LIMIT, keywords: Sequence[str] = ()
    ) -> list[Found]:
        """``(part, row, score)`` of the segments best for ``text`` by BM25, best first (only
        segments holding at least one of its words; :data:`STOP_WORDS` are left out of the
        query unless it has no other word)."""
        terms = sorted(set(words_of(text)) - STOP_WORDS) or sorted(set(words_of(text)))
        if not terms or not self._parts:
            return []
        n_total, mean_len = self._bm25_corpus()
        postings = [[p.segments.word_postings(t) for t in terms] for p in self._parts]
        df = np.sum([[len(rows) for rows, _ in per] for per in postings], axis=0)
        idf = np.log1p((n_total - df + 0.5) / (df + 0.5))
        found: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i, per in enumerate(postings):
            seg = self._parts[i].segments
            rows = np.concatenate([r for r, _ in per])
            if not rows.size:
                continue
            tf = np.concatenate([f for _, f in per])
            weight = np.repeat(idf, [len(r) for r, _ in per]).astype(np.float32)
            length = (seg.word_len[rows].astype(np.float32) if seg.word_len is not None
                      else np.float32(mean_len))  # fmt: skip
            norm = BM25_K1 * (1 - BM25_B + BM25_B * length / np.float32(mean_len))
            contrib = weight * tf * (BM25_K1 + 1) / (tf + norm)
            unique, inverse = np.unique(rows, return_inverse=True)
            scores = np.bincount(inverse, weights=contrib).astype(np.float32)
            if keywords:
                allowed = self._keyword_rows(i, keywords)
                keep = np.isin(unique, allowed)
                unique, scores = unique[keep], scores[keep]
            found.append((i, unique, scores))
        return _top(found, limit)

    def _bm25_corpus(self) -> tuple[int, float]:
        """Segments and mean words per segment over every shard (BM25's N and avgdl)."""
        if self._bm25_stats is None:
            n = self.n_segments
            words = 0.0
            for p in self._parts:
                seg_meta = p.shard.meta.get("segments") or {}
                if "words" in seg_meta:
                    words += float(seg_meta["words"])
                else:  # format 1: count them once
                    words += sum(len(words_of(p.segments.text(r))) for r in range(len(p.segments)))
            self._bm25_stats = (n, max(words / max(n, 1), 1.0))
        return self._bm25_stats

    # -- shared ----------------------------------------------------------------------------

    def hits(self, found: Sequence[Found]) -> list[SearchHit]:
        """Search records for ``(part, row, score)`` triples."""
        out = []
        for i, row, score in found:
            part = self._parts[i]
            seg = part.segments
            episode = part.shard.episodes[int(seg.episode[row])]
            extra: dict[str, Any] = {"season": part.shard.season}
            out.append(
                SearchHit(
                    episode_id=episode.episode_id,
                    source=episode.source,
                    start_s=float(seg.times[row, 0]),
                    end_s=float(seg.times[row, 1]),
                    text=seg.text(row),
                    score=score,
                    extra=extra,
                )
            )
        return out

    def _keyword_rows(self, i: int, keywords: Sequence[str]) -> np.ndarray:
        """Rows of part ``i`` holding every keyword: the shard's word index, then (for a
        phrase) a check of the candidates' text."""
        seg = self._parts[i].segments
        result: np.ndarray | None = None
        for keyword in keywords:
            words = keyword_words(keyword)
            for word in words:
                rows = seg.rows_with_word(word)
                result = rows if result is None else np.intersect1d(result, rows)
                if not result.size:
                    return result
            if len(words) > 1:
                phrase = phrase_pattern(words)
                assert result is not None
                result = result[[bool(phrase.search(seg.text(int(r)))) for r in result]]
        return np.zeros(0, np.int64) if result is None else result


def _top(found: Sequence[tuple[int, np.ndarray, np.ndarray]], limit: int) -> list[Found]:
    """The best ``limit`` of per-part ``(part, rows, scores)``, best first; ties by part, row."""
    if not found:
        return []
    scores = np.concatenate([s for _, _, s in found]).astype(np.float32)
    rows = np.concatenate([r for _, r, _ in found])
    parts = np.repeat([p for p, _, _ in found], [len(r) for _, r, _ in found])
    k = min(limit, scores.size)
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(k)
    top = top[np.lexsort((rows[top], parts[top], -scores[top]))]
    return [(int(parts[t]), int(rows[t]), float(scores[t])) for t in top]


def fuse(rankings: Sequence[Sequence[Found]], *, k: int = RRF_K) -> list[Found]:
    """Reciprocal-rank fusion of rankings of ``(part, row, score)``: each segment scores
    ``sum 1 / (k + rank)`` (rank from 1) over the rankings it is in; best first, ties by the
    first ranking's order, then part and row."""
    fused: dict[tuple[int, int], float] = {}
    first: dict[tuple[int, int], int] = {}
    for ranking in rankings:
        for rank, (p, r, _) in enumerate(ranking, start=1):
            fused[(p, r)] = fused.get((p, r), 0.0) + 1.0 / (k + rank)
            first.setdefault((p, r), len(first))
    order = sorted(fused, key=lambda key: (-fused[key], first[key], key))
    return [(p, r, fused[(p, r)]) for p, r in order]


def keyword_words(keyword: str) -> list[str]:
    """The words of a keyword or phrase (lower-cased runs of letters and digits)."""
    words = words_of(keyword)
    if not words:
        raise TranscriptError(f"a keyword needs a letter or a digit, got {keyword!r}")
    return words


def phrase_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """The words in this order, whole, with only spaces or punctuation between, any case."""
    body = r"\W+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def search_snapshot(
    snapshot: Snapshot | str | os.PathLike[str],
    text: str,
    *,
    limit: int = DEFAULT_LIMIT,
    keywords: Sequence[str] = (),
    embedder: Embedder | None = None,
    exact: bool = False,
    mode: str = DEFAULT_MODE,
) -> list[SearchHit]:
    """Transcript segments of a snapshot best for ``text``, best first.

    Parameters
    ----------
    snapshot : Snapshot or path
        An open snapshot (kept open), or a snapshot directory (opened and closed here).
    text : str
        What was said, in any words (at most :data:`MAX_QUERY_CHARS` characters).
    limit : int
        At most this many hits.
    keywords : sequence of str
        Only segments holding each keyword as whole words (case-insensitive).
    embedder : Embedder, optional
        The query model; default the packaged one (loaded once per process).
    exact : bool
        Score every segment's vector instead of searching the shards' graphs.
    mode : str
        ``hybrid`` (default), ``semantic`` or ``keyword``: see the module docstring.

    Returns
    -------
    list of SearchHit
        ``to_dict()`` gives the ``citywok search --json`` shape. Empty when nothing matches
        or the snapshot holds no transcripts.

    Raises
    ------
    SnapshotError
        The directory is missing, holds no shard, or a shard is unusable.
    TranscriptError
        Empty or too long text, a bad limit or mode, or a query model other than the
        snapshot's.
    """
    if isinstance(snapshot, Snapshot):
        return SegmentSearcher(snapshot, embedder).search(
            text, limit=limit, keywords=keywords, exact=exact, mode=mode
        )
    with Snapshot.open(Path(snapshot)) as snap:
        return SegmentSearcher(snap, embedder).search(
            text, limit=limit, keywords=keywords, exact=exact, mode=mode
        )


__all__ = [
    "DEFAULT_MODE",
    "MAX_QUERY_CHARS",
    "MODES",
    "SegmentSearcher",
    "check_query",
    "fuse",
    "search_snapshot",
]
