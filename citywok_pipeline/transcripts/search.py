"""Transcript search in a snapshot: "where do they say X?" over every shard's segments.

The query is embedded with the model the segments were embedded with, and segments are ranked
by cosine similarity (their vectors are unit length, so a dot product). Up to
:data:`EXACT_LIMIT` segments every one is scored. Beyond that, every segment is first ranked
by the Hamming distance between its sign bits and the query's
(:mod:`citywok_pipeline.snapshot.segments`: a few vectorised passes over 48 bytes a segment),
and only the nearest :data:`CANDIDATE_FRACTION` of them (at least :data:`MIN_CANDIDATES`) are
scored exactly, which keeps recall@10 against exact search above 0.95 at a million segments
(measured in benchmarks/RESULTS.md). The bits need no training, so season shards built apart
are ranked together. Keywords filter first: only segments whose text holds every keyword
(case-insensitive, as whole words) are ranked, and those are scored exactly.

Scoring uses torch's float16 matrix-vector product on the memory-mapped vectors, with no copy.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..snapshot.directory import Snapshot
from ..snapshot.segments import ShardSegments, hamming, sign_bits, words_of
from ..snapshot.shard import Shard
from .embedder import Embedder, load_embedder
from .errors import TranscriptError
from .records import SearchHit

if TYPE_CHECKING:
    import torch

EXACT_LIMIT = 100_000
CANDIDATE_FRACTION = 0.005
MIN_CANDIDATES = 2_000
DEFAULT_LIMIT = 10


@dataclass
class _Part:
    shard: Shard
    segments: ShardSegments
    vectors: torch.Tensor  # over the memory map, no copy
    scale: torch.Tensor | None  # int8 only


class SegmentSearcher:
    """Search the transcript segments of an open snapshot; cheap to build, reusable.

    Parameters
    ----------
    snapshot : Snapshot
        Kept open by the caller for the searcher's lifetime.
    embedder : Embedder, optional
        Embeds the queries; default: :func:`load_embedder` with no path (the packaged model).
        It must be the model the segments were embedded with.

    Raises
    ------
    TranscriptError
        The shards' segments were embedded with different models, or with another model
        than ``embedder``.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        embedder: Embedder | None = None,
        *,
        exact_limit: int = EXACT_LIMIT,
        candidate_fraction: float = CANDIDATE_FRACTION,
        min_candidates: int = MIN_CANDIDATES,
    ) -> None:
        import torch

        self.snapshot = snapshot
        self.exact_limit = exact_limit
        self.candidate_fraction = candidate_fraction
        self.min_candidates = min_candidates
        self._parts: list[_Part] = []
        for shard in snapshot.shards:
            segments = shard.segments
            if segments is None or not len(segments):
                continue
            with warnings.catch_warnings():
                # The map is read-only and so are these tensors: nothing writes to them.
                warnings.simplefilter("ignore", UserWarning)
                vectors = torch.from_numpy(segments.vectors)
                scale = None if segments.scale is None else torch.from_numpy(segments.scale)
            self._parts.append(_Part(shard, segments, vectors, scale))
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

    def _check(self, embedder: Embedder) -> None:
        if (embedder.model_name, embedder.dim) != (self.model, self.dim):
            raise TranscriptError(
                f"{self.snapshot.path}: segments were embedded with {self.model} ({self.dim}-d), "
                f"but the query model is {embedder.model_name} ({embedder.dim}-d); "
                "search with the model that built the snapshot"
            )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder()
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
    ) -> list[SearchHit]:
        """The ``limit`` segments nearest ``text``, best first (empty when there are none).

        ``keywords``: only segments whose text holds each of them, as whole words, ignoring
        case. ``exact``: score every segment, whatever the snapshot's size.
        """
        if limit < 1:
            raise TranscriptError(f"limit must be at least 1, got {limit}")
        if not text.strip():
            raise TranscriptError("the search text is empty")
        if not self._parts:
            return []
        query = self.embedder.embed([text])[0]
        return self.hits(self.search_vector(query, limit=limit, keywords=keywords, exact=exact))

    def search_vector(
        self,
        query: np.ndarray,
        *,
        limit: int = DEFAULT_LIMIT,
        keywords: Sequence[str] = (),
        exact: bool = False,
    ) -> list[tuple[int, int, float]]:
        """``(part, row, score)`` of the best segments for a unit query vector, best first."""
        import torch

        if not self._parts:
            return []
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float16))
        ranges: list[tuple[int, int, int]] = []  # (part, lo, hi): every row of a part
        rows: list[tuple[int, np.ndarray]] = []  # (part, rows): some rows of a part
        if keywords:
            rows = [(i, self._keyword_rows(i, keywords)) for i in range(len(self._parts))]
        elif exact or self.n_segments <= self.exact_limit:
            ranges = [(i, 0, len(p.segments)) for i, p in enumerate(self._parts)]
        else:
            rows = self._nearest_by_bits(query)

        parts: list[int] = []
        found: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for i, lo, hi in ranges:
            parts.append(i)
            found.append(np.arange(lo, hi))
            scores.append(self._score(i, slice(lo, hi), q))
        for i, r in rows:
            if r.size:
                parts.append(i)
                found.append(r)
                if r.size * 4 > len(self._parts[i].segments):
                    # Many rows: one pass over the contiguous vectors beats gathering them.
                    scores.append(self._score(i, slice(None), q)[r])
                else:
                    scores.append(self._score(i, torch.from_numpy(r), q))
        if not found:
            return []
        all_scores = np.concatenate(scores)
        all_rows = np.concatenate(found)
        all_parts = np.repeat(parts, [len(f) for f in found])
        k = min(limit, all_scores.size)
        top = np.argpartition(-all_scores, k - 1)[:k] if k < all_scores.size else np.arange(k)
        top = top[np.lexsort((all_rows[top], all_parts[top], -all_scores[top]))]
        return [(int(all_parts[t]), int(all_rows[t]), float(all_scores[t])) for t in top]

    def hits(self, found: Sequence[tuple[int, int, float]]) -> list[SearchHit]:
        """Search records for ``(part, row, score)`` triples."""
        out = []
        for i, row, score in found:
            part = self._parts[i]
            seg = part.segments
            episode = part.shard.episodes[int(seg.episode[row])]
            out.append(
                SearchHit(
                    episode_id=episode.episode_id,
                    source=episode.source,
                    start_s=float(seg.times[row, 0]),
                    end_s=float(seg.times[row, 1]),
                    text=seg.text(row),
                    score=score,
                    extra={"season": part.shard.season},
                )
            )
        return out

    def _score(self, i: int, rows: Any, q: torch.Tensor) -> np.ndarray:
        import torch

        part = self._parts[i]
        block = part.vectors[rows]
        if part.scale is None:
            return torch.mv(block, q).float().numpy()  # type: ignore[no-any-return]
        s = torch.mv(block.to(torch.float16), q).float() * part.scale[rows]
        return s.numpy()  # type: ignore[no-any-return]

    def _nearest_by_bits(self, query: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Rows of every part whose sign bits are nearest the query's, enough of them to be
        scored exactly (the candidate budget, ties at the cut included)."""
        budget = max(self.min_candidates, int(self.candidate_fraction * self.n_segments))
        q_bits = sign_bits(np.asarray(query, dtype=np.float32)[None, :])
        distances = [hamming(p.segments.bits, q_bits) for p in self._parts]
        # The smallest distance whose cumulative count reaches the budget: a histogram of
        # at most dim + 1 values instead of a partition of every segment.
        counts = sum(np.bincount(d, minlength=self.dim + 1) for d in distances)
        cut = int(np.searchsorted(np.cumsum(counts), budget))
        return [(i, np.flatnonzero(d <= cut)) for i, d in enumerate(distances)]

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
) -> list[SearchHit]:
    """Transcript segments of a snapshot nearest ``text``, best first.

    Parameters
    ----------
    snapshot : Snapshot or path
        An open snapshot (kept open), or a snapshot directory (opened and closed here).
    text : str
        What was said, in any words.
    limit : int
        At most this many hits.
    keywords : sequence of str
        Only segments holding each keyword as whole words (case-insensitive).
    embedder : Embedder, optional
        The query model; default the packaged one (loaded once per process).
    exact : bool
        Score every segment instead of those nearest by sign bits.

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
        Empty text, a bad limit, or a query model other than the snapshot's.
    """
    if isinstance(snapshot, Snapshot):
        return SegmentSearcher(snapshot, embedder).search(
            text, limit=limit, keywords=keywords, exact=exact
        )
    with Snapshot.open(Path(snapshot)) as snap:
        return SegmentSearcher(snap, embedder).search(
            text, limit=limit, keywords=keywords, exact=exact
        )
