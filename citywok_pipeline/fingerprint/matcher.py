"""Fingerprint audio and match clips against an index by offset-histogram voting.

How a clip is matched
---------------------
1. The clip is fingerprinted more densely than the index (more peaks per second, a larger
   fan-out): a query hash that finds nothing costs one lookup, but an index hash missing
   from the query is a lost vote.
2. Every query hash is looked up; each hit votes for a cell ``(episode, reference frame -
   query frame)``. A cell's score sums the votes within ``±tolerance`` frames, so small
   timing errors (re-encoding, reverb) still line up.
3. Speed changes: hashes are formed again with times and frequencies rescaled by a few
   factors (``speeds``); the factor whose best cell wins is the clip's playback speed. The
   unit factor runs first and the others only when it is not conclusive.
4. Significance: under chance the votes fall uniformly over all cells, so a cell's score is
   Poisson with mean ``lambda = hits * (2 * tolerance + 1) / frames``. The expected number of
   chance cells scoring at least as high, ``E``, gives ``confidence = 1 / (1 + E)``.
5. Shared audio: a query hash that lines up in several candidate episodes (an intro, a
   theme) is split between them (weight ``1/n``). When another episode's weighted score
   comes close to the best one, the clip is shared audio and all such episodes are
   returned with ``ambiguous=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import poisson

from .hashes import Hashes, hash_peaks
from .params import FingerprintParams, ParameterError
from .peaks import find_peaks
from .records import Episode, Match, MatchResult
from .spectrogram import spectrogram


class Searchable(Protocol):
    """What the matcher needs from an index (a :class:`Snapshot`, or an in-memory index)."""

    params: FingerprintParams
    episodes: list[Episode]
    total_frames: float

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class MatchParams:
    """Query-side settings; they can change without rebuilding an index."""

    peaks_per_second: float = 30.0
    fanout: int = 10
    speeds: tuple[float, ...] = (1.0, 0.99, 1.01, 0.98, 1.02)
    tolerance: int = 2
    min_score: int = 5
    min_confidence: float = 0.5
    early_exit_confidence: float = 0.999
    ambiguity_ratio: float = 0.5
    max_candidates: int = 16

    def __post_init__(self) -> None:
        if not self.speeds or any(not 0.8 <= s <= 1.25 for s in self.speeds):
            raise ParameterError("speeds must be factors between 0.8 and 1.25")
        if self.tolerance < 0 or self.min_score < 1:
            raise ParameterError("tolerance must be >= 0 and min_score >= 1")


DEFAULT_MATCH_PARAMS = MatchParams()


def fingerprint(samples: np.ndarray, *, params: FingerprintParams) -> Hashes:
    """Index-side hashes of mono audio at ``params.sample_rate``."""
    spec = spectrogram(samples, params=params)
    return hash_peaks(find_peaks(spec, params=params), params=params)


@dataclass
class _Candidate:
    episode: int
    delta: int
    score: int
    hits: np.ndarray  # query hash indices that line up
    offset_frames: float
    speed: float
    confidence: float = 0.0
    weighted: float = 0.0


def _confidence(score: int, n_hits: int, frames: float, tolerance: int, tries: int) -> float:
    width = 2 * tolerance + 1
    frames = max(frames, width)
    lam = n_hits * width / frames
    expected = (frames / width) * tries * float(poisson.sf(score - 1, lam))
    return 1.0 / (1.0 + expected)


def _candidates(
    hashes: Hashes, index: Searchable, mp: MatchParams, speed: float
) -> tuple[list[_Candidate], int]:
    if len(hashes) == 0:
        return [], 0
    order = np.argsort(hashes.keys, kind="stable")
    qi, ep, frame = index.lookup(hashes.keys[order])
    if qi.size == 0:
        return [], 0
    qi = order[qi]
    delta = frame - np.rint(hashes.times[qi]).astype(np.int64)
    cell = (ep << 32) + (delta + (1 << 31))
    cells, counts = np.unique(cell, return_counts=True)
    csum = np.concatenate(([0], np.cumsum(counts)))
    lo = np.searchsorted(cells, cells - mp.tolerance, side="left")
    hi = np.searchsorted(cells, cells + mp.tolerance, side="right")
    smoothed = csum[hi] - csum[lo]
    # Best cell of each episode, then the strongest episodes.
    by_score = np.argsort(-smoothed, kind="stable")
    eps_sorted = cells[by_score] >> 32
    _, first = np.unique(eps_sorted, return_index=True)
    best = by_score[first]
    best = best[np.argsort(-smoothed[best], kind="stable")][: mp.max_candidates]
    out = []
    for c in best:
        if smoothed[c] < 2:
            break
        e = int(cells[c] >> 32)
        d = int((cells[c] & 0xFFFFFFFF) - (1 << 31))
        sel = (ep == e) & (np.abs(delta - d) <= mp.tolerance)
        hits = np.unique(qi[sel])
        offsets = frame[sel] - hashes.times[qi[sel]]
        out.append(
            _Candidate(e, d, int(hits.size), hits, float(np.median(offsets)), speed)
        )
    return out, int(qi.size)


def _decide(cands: list[_Candidate], index: Searchable, mp: MatchParams) -> MatchResult:
    sig = [c for c in cands if c.score >= mp.min_score and c.confidence >= mp.min_confidence]
    if not sig:
        return MatchResult(matches=(), ambiguous=False, query_hashes=0)
    # Split each query hash between the episodes it lines up in.
    support: dict[int, int] = {}
    for c in sig:
        for q in c.hits.tolist():
            support[q] = support.get(q, 0) + 1
    for c in sig:
        c.weighted = float(sum(1.0 / support[q] for q in c.hits.tolist()))
    sig.sort(key=lambda c: (-c.weighted, -c.score))
    best = sig[0]
    peers = [c for c in sig[1:] if c.weighted >= mp.ambiguity_ratio * best.weighted]
    chosen = [best, *peers]
    fs = index.params.frame_seconds
    matches = tuple(
        Match(
            episode_id=index.episodes[c.episode].episode_id,
            source=index.episodes[c.episode].source,
            season=index.episodes[c.episode].season,
            offset_s=max(0.0, c.offset_frames * fs),
            score=c.score,
            confidence=c.confidence,
            speed=c.speed,
        )
        for c in chosen
    )
    return MatchResult(matches=matches, ambiguous=bool(peers), query_hashes=0)


def match_samples(
    samples: np.ndarray, index: Searchable, *, match_params: MatchParams = DEFAULT_MATCH_PARAMS
) -> MatchResult:
    """Find where mono audio at ``index.params.sample_rate`` lies in the index.

    Returns
    -------
    MatchResult
        Matches best first; none when the evidence is weak; several with ``ambiguous=True``
        when the clip is audio shared by several episodes.
    """
    params, mp = index.params, match_params
    spec = spectrogram(samples, params=params)
    peaks = find_peaks(spec, params=params, peaks_per_second=mp.peaks_per_second)
    frames = float(index.total_frames)
    tried: list[tuple[float, list[_Candidate], int]] = []
    n_query = 0
    for i, speed in enumerate(mp.speeds):
        hashes = hash_peaks(peaks, params=params, fanout=mp.fanout, speed=speed)
        n_query = max(n_query, len(hashes))
        cands, n_hits = _candidates(hashes, index, mp, speed)
        tried.append((speed, cands, n_hits))
        tries = 1 if i == 0 else len(mp.speeds)
        for c in cands:
            c.confidence = _confidence(c.score, n_hits, frames, mp.tolerance, tries)
        if i == 0 and cands and cands[0].confidence >= mp.early_exit_confidence:
            break
    if len(tried) > 1:
        # Other speeds were searched too: every candidate pays for all the tries.
        for _, cands, n_hits in tried:
            for c in cands:
                c.confidence = _confidence(c.score, n_hits, frames, mp.tolerance, len(tried))
    _, cands, _ = max(tried, key=lambda x: x[1][0].score if x[1] else 0)
    result = _decide(cands, index, mp)
    return MatchResult(matches=result.matches, ambiguous=result.ambiguous, query_hashes=n_query)
