"""Fingerprint audio and match clips against an index by offset-histogram voting.

How a clip is matched
---------------------
1. A quick pass first: the clip's peaks are picked like the index's, and each anchor is
   paired with only its first ``quick_fanout`` targets (half the index's): a subset of the
   hashes the index holds for the same audio, so half the lookups find most of the
   evidence; and it scores at most ``quick_hits_per_hash`` hits per hash, half the other
   passes' budget (the commonest keys are left out first). That settles clean and mildly
   degraded clips of one episode. When another episode comes close (shared audio, such as
   an intro), or the evidence falls short but reaches ``min_score``, the clip is
   fingerprinted exactly like the index: its fuller evidence names every episode shared
   audio is in (step 5), and settles most clips short of evidence. When the evidence is
   weak, the clip is fingerprinted more densely (more peaks per second, a larger fan-out):
   a query hash that finds nothing costs one lookup, but an index hash missing from the
   query is a lost vote.
2. Every query hash is looked up; each hit votes for a cell ``(episode, reference frame -
   query frame)``. A cell's score sums the votes within ``±tolerance`` frames, so small
   timing errors (re-encoding, reverb) still line up.
   A cell's evidence is the number of distinct query instants (anchor frames) among its
   votes: the peaks of one chord all pair with the same targets and would otherwise turn a
   single coincidence into many votes.
3. Speed changes: hashes are formed again with times and frequencies rescaled by a few
   factors (``speeds``); the factor whose best cell wins is the clip's playback speed. The
   unit factor runs first and the others only when it is not conclusive.
4. Significance: under chance the votes fall uniformly over all cells, so a cell's score is
   Poisson with mean ``lambda = hits * (2 * tolerance + 1) / frames``, except that chance
   votes come in clumps (musical events repeat together): with clump size ``k`` the score
   is ``k`` times a Poisson count of mean ``lambda / k``. ``E``, the expected number of
   chance cells (over every episode, offset and speed tried) scoring at least as high,
   gives ``confidence = 1 / (1 + E ** b)``. ``k = 1.71`` and ``b = 0.63`` were fitted by
   logistic regression on right/wrong answers over the generated corpus (benchmarks/);
   the calibration table in benchmarks/RESULTS.md checks it. Because ``E`` grows with the
   number of cells, a larger library asks for more evidence, as it should.
5. Shared audio: an instant of the clip that lines up in several candidate episodes (an
   intro, a theme) is split between them (weight ``1/n``), and candidates are ranked by
   that weighted evidence. Episodes that score close to the best one on the same instants
   are its peers; unless the best one also has substantial evidence of its own (the clip
   runs past the intro into one episode), the clip is shared audio and the best episode and
   its peers are returned with ``ambiguous=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import gammaln

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

    def lookup(
        self, query: np.ndarray, *, max_hits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class MatchParams:
    """Query-side settings; they can change without rebuilding an index."""

    # The quick pass: targets per anchor (at the index's peak density; the index pairs each
    # anchor with params.fanout, 4), and hits scored per hash (see hits_per_hash). Chosen on
    # the 1,000-hour benchmark snapshot: the same answers as a first pass of the index's own
    # fingerprint on clean, degraded and intro clips, a clean 5 s clip in about 60% of the
    # time. benchmarks/RESULTS.md is measured with these defaults.
    quick_fanout: int = 2
    quick_hits_per_hash: int = 50
    peaks_per_second: float = 30.0
    fanout: int = 10
    speeds: tuple[float, ...] = (1.0, 0.99, 1.01, 0.98, 1.02)
    tolerance: int = 2
    min_score: int = 5
    min_confidence: float = 0.9
    early_exit_confidence: float = 0.999
    clump: float = 1.71
    calibration_slope: float = 0.63
    ambiguity_ratio: float = 0.5
    own_evidence: float = 0.3
    max_candidates: int = 16
    # At most this many hits per query hash are scored; past it the commonest keys are left
    # out. Bounds the work on a large library (posting lists grow with it) and leaves a small
    # one untouched. Measured in benchmarks/RESULTS.md.
    hits_per_hash: int = 100

    def __post_init__(self) -> None:
        if not self.speeds or any(not 0.8 <= s <= 1.25 for s in self.speeds):
            raise ParameterError("speeds must be factors between 0.8 and 1.25")
        if self.tolerance < 0 or self.min_score < 1:
            raise ParameterError("tolerance must be >= 0 and min_score >= 1")
        if self.hits_per_hash < 1 or self.quick_hits_per_hash < 1:
            raise ParameterError("hits_per_hash and quick_hits_per_hash must be >= 1")
        if self.quick_fanout < 1 or self.fanout < 1:
            raise ParameterError(
                f"quick_fanout and fanout must be >= 1, got {self.quick_fanout} and {self.fanout}"
            )


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


def _confidence(score: int, n_hits: int, frames: float, mp: MatchParams, tries: int) -> float:
    """Calibrated probability that a cell scoring ``score`` is not chance (module docstring)."""
    width = 2 * mp.tolerance + 1
    frames = max(frames, width)
    lam = max(n_hits * width / frames, 1e-12) / mp.clump
    s = score / mp.clump
    log_expected = np.log(frames / width * tries) + s * np.log(lam) - lam - gammaln(s + 1)
    return float(1.0 / (1.0 + np.exp(np.clip(mp.calibration_slope * log_expected, -50, 50))))


def _windows(cells: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """For sorted distinct integers, where the values within ``±tolerance`` of each begin and
    end: ``searchsorted(cells, cells - tolerance, "left")`` and ``searchsorted(cells, cells +
    tolerance, "right")``, by comparing each with its ``tolerance`` neighbours on either side
    (distinct integers: no others can be that close) instead of binary searches."""
    n = cells.size
    lo = np.arange(n, dtype=np.int64)
    hi = lo + 1
    for k in range(1, min(tolerance, n - 1) + 1):
        lo[k:] -= cells[:-k] >= cells[k:] - tolerance
        hi[:-k] += cells[k:] <= cells[:-k] + tolerance
    return lo, hi


def _candidates(
    hashes: Hashes, index: Searchable, mp: MatchParams, speed: float, *, quick: bool = False
) -> tuple[list[_Candidate], int]:
    if len(hashes) == 0:
        return [], 0
    order = np.argsort(hashes.keys, kind="stable")
    per_hash = mp.quick_hits_per_hash if quick else mp.hits_per_hash
    qi, ep, frame = index.lookup(hashes.keys[order], max_hits=per_hash * len(hashes))
    if qi.size == 0:
        return [], 0
    qi = order[qi]
    delta = frame - np.rint(hashes.times[qi]).astype(np.int64)
    cell = (ep << 32) + (delta + (1 << 31))
    # The hits of one cell end up together; their order within it does not matter.
    by_cell = np.argsort(cell)
    sorted_cells = cell[by_cell]
    starts = np.flatnonzero(np.concatenate(([True], sorted_cells[1:] != sorted_cells[:-1])))
    cells = sorted_cells[starts]
    csum = np.append(starts, sorted_cells.size)  # hits before each distinct cell, and all
    lo, hi = _windows(cells, mp.tolerance)
    smoothed = csum[hi] - csum[lo]
    # Best cell of each episode (the first of equals), then the strongest episodes (the
    # lower episode first among equals). Cells are sorted by episode: one run each.
    n = cells.size
    episode_of = cells >> 32
    run_start = np.flatnonzero(np.concatenate(([True], episode_of[1:] != episode_of[:-1])))
    run_best = np.maximum.reduceat(smoothed, run_start)
    at_best = smoothed == np.repeat(run_best, np.diff(np.append(run_start, n)))
    first_best = np.minimum.reduceat(np.where(at_best, np.arange(n), n), run_start)
    best = first_best[np.argsort(-run_best, kind="stable")[: mp.max_candidates]]
    out = []
    for c in best:
        # A cell's evidence (distinct anchor instants) is at most its hits: one with fewer
        # than min_score hits can neither be an answer nor make another one shared.
        if smoothed[c] < max(2, mp.min_score):
            break
        e = int(cells[c] >> 32)
        d = int((cells[c] & 0xFFFFFFFF) - (1 << 31))
        sel = by_cell[csum[lo[c]] : csum[hi[c]]]
        hits = np.unique(qi[sel])
        # Evidence is counted in distinct anchor instants, not hashes: the simultaneous peaks
        # of one chord pair with the same targets, and one coincidence would count many times.
        events = np.unique(np.rint(hashes.times[hits])).size
        offsets = frame[sel] - hashes.times[qi[sel]]
        out.append(_Candidate(e, d, int(events), hits, float(np.median(offsets)), speed))
    out.sort(key=lambda c: -c.score)
    return out, int(qi.size)


def _decide(
    cands: list[_Candidate], times: np.ndarray, index: Searchable, mp: MatchParams
) -> tuple[list[_Candidate], bool]:
    sig = [c for c in cands if c.score >= mp.min_score and c.confidence >= mp.min_confidence]
    if not sig:
        return [], False
    # Down-weight shared evidence: an instant of the clip that lines up in n episodes counts
    # 1/n for each of them, so audio unique to one episode outweighs a shared intro.
    events = [set(np.rint(times[c.hits]).astype(np.int64).tolist()) for c in sig]
    support: dict[int, int] = {}
    for ev in events:
        for e in ev:
            support[e] = support.get(e, 0) + 1
    for c, ev in zip(sig, events, strict=True):
        c.weighted = float(sum(1.0 / support[e] for e in ev))
    order = sorted(range(len(sig)), key=lambda i: (-sig[i].weighted, -sig[i].score))
    sig, events = [sig[i] for i in order], [events[i] for i in order]
    best, best_events = sig[0], events[0]
    peers = [
        i
        for i in range(1, len(sig))
        if sig[i].score >= mp.ambiguity_ratio * best.score
        and len(events[i] & best_events) >= 0.5 * len(events[i])
    ]
    if not peers:
        return [best], False
    # Shared audio unless the best episode has substantial evidence of its own.
    own = best_events.difference(*(events[i] for i in peers))
    if len(own) >= max(mp.min_score, mp.own_evidence * len(best_events)):
        return [best], False
    return [best, *sorted((sig[i] for i in peers), key=lambda c: -c.score)], True


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
    # Cheapest first: the quick pass (the index's peaks, a smaller fan-out) settles clean and
    # mildly degraded clips of one episode. When another episode comes close (shared audio)
    # or the evidence falls a little short, the index's whole fingerprint comes next; when
    # the evidence is weak, a denser fingerprint, then other playback speeds.
    quick = min(mp.quick_fanout, params.fanout)
    passes: list[tuple[float | None, int, float]] = [(None, quick, 1.0)]
    if quick < params.fanout:
        passes.append((None, params.fanout, 1.0))  # only when the quick pass asks for it
    passes += [(mp.peaks_per_second, mp.fanout, s) for s in mp.speeds]
    peaks_at: dict[float | None, np.ndarray] = {}
    frames = float(index.total_frames)
    tried: list[tuple[float, list[_Candidate], int, np.ndarray]] = []
    n_query = 0
    whole = False  # the quick pass asks for the index's whole fingerprint
    for i, (density, fanout, speed) in enumerate(passes):
        if i == 1 and density is None and not whole:
            continue
        if density not in peaks_at:
            peaks_at[density] = find_peaks(spec, params=params, peaks_per_second=density)
        hashes = hash_peaks(peaks_at[density], params=params, fanout=fanout, speed=speed)
        n_query = max(n_query, len(hashes))
        cands, n_hits = _candidates(hashes, index, mp, speed, quick=i == 0)
        tried.append((speed, cands, n_hits, hashes.times))
        for c in cands:
            c.confidence = _confidence(c.score, n_hits, frames, mp, len(tried))
        best = cands[0] if cands else None
        conclusive = (
            best is not None
            and best.score >= 2 * mp.min_score
            and best.confidence >= mp.early_exit_confidence
        )
        if i == 0 and quick < params.fanout and best is not None:
            if conclusive and len(cands) > 1:
                # Another episode close to the best: shared audio (an intro) or a close
                # call; the whole fingerprint names every episode the audio is in.
                whole = cands[1].score >= mp.ambiguity_ratio * best.score
                conclusive = not whole
            elif not conclusive:
                # Some evidence, not enough: twice the hashes usually settle it, for a
                # fraction of the dense passes' cost.
                whole = best.score >= mp.min_score
        if conclusive and speed == 1.0:
            break
    # Every candidate pays for all the passes tried (more chances to meet chance).
    for _, cands, n_hits, _ in tried:
        for c in cands:
            c.confidence = _confidence(c.score, n_hits, frames, mp, len(tried))
    speed, cands, _, times = max(tried, key=lambda x: x[1][0].score if x[1] else 0)
    chosen, ambiguous = _decide(cands, times, index, mp)
    fs = params.frame_seconds
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
    return MatchResult(matches=matches, ambiguous=ambiguous, query_hashes=n_query)
