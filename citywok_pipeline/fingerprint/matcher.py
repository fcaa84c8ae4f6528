"""Fingerprint audio and match clips against an index by offset-histogram voting.

How a clip is matched
---------------------
The cascade is a list of named passes (:class:`Pass`: ``quick``, ``whole``, ``dense``,
``spread``, then ``speed xF``, ``pitch +S``, ``tempo xF``, and last ``room``; :func:`passes`
lists them in that order), cheapest first but the last; each
returns a :class:`PassResult`, and the clip's answer comes from the strongest one, its
confidence computed once at the end over every pass tried (``MatchResult.passes`` names
them).

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
   query is a lost vote. When that is not conclusive either, the ``spread`` pass hashes the
   dense peaks again with each frequency also rounded to its other neighbouring bin (four
   keys per pair, :func:`~.hashes.hash_peaks`' ``spread``): a room's early reflections
   (2-40 ms) comb-filter the spectrum and move its peaks by a fraction of a bin, so a peak
   near a bin's edge rounds the other way and its hash is lost. Measured on clips of
   benchmarks/accuracy.py (seeds 0-3, 40 per cell) against the right episode and offset:
   loudspeaker-in-a-room clips of 3 s reaching 8 instants 40% -> 62% of them, of 5 s 80% ->
   90%; spectral dereverberation of the query instead (late-reverberation subtraction with
   RT60 0.3-0.8 s, a decayed running maximum per bin, per-bin whitening, time-derivative
   emphasis) moved none of them. Chance gives it four times the hits, so it answers only from
   ``spread_min_score`` (7) instants and is weighed against the other passes by the chance
   cells its score implies (at 5-6 it answered 2-3 more of 2,040 unseen clips). It runs only
   for clips the passes before it left unsettled; the clean path is unchanged.
   Last of all (after the search over changes, step 3), the ``room`` pass: the spread
   pass's keys, each also with its time distance one
   frame shorter and one longer (twelve keys per pair, ``hash_peaks``' ``time_spread``):
   reverb smears peaks in time, and a pair whose distance rounds to the next frame is lost.
   Twelve keys give chance twelve times the hits, and unseen music lines up on it far more
   than the chance model says (an unseen clip of 2 s settled by it at 11 instants, where the
   model expects 5e-9 chance cells), so its answer needs both an expected ``room_max_chance``
   (2e-6) chance cells of its pass alone at its score and its best cell to be the best cell
   of a pass before it too (the same episode, the offset within ``room_agree_frames``):
   with only a bound of 1e-4 it answered 14 of 3,840 unseen clips where the passes before it
   answered 8; with both, the same 8. Measured with /tmp scripts on clips drawn as
   benchmarks/accuracy.py draws them (seeds 0-15 to choose the rule, 16-23 to check it;
   the figures in the commit that added it): loudspeaker-in-a-room clips of 3 s 83% -> 93%
   right on seeds 16-23 (160 clips), of 5 s 97.5% -> 100%; unseen audio answered the same.
   In benchmarks/RESULTS.md (8 seeds, beside the matcher before it): 3 s 83.8% -> 91.2%, 5 s
   96.2% -> 98.8%, unseen 99.90% either way; two time-stretched clips (of 6,800) it settles
   in another episode, at a cell the passes before it already found best with 6-9 instants
   (the generated corpus' music repeats across episodes), which the search over tempo used
   to outscore.
   It ran before the search over changes at first: the same answers, but every clip the
   search settles paid for it, 1.7-4x the search's time at 1,000 hours (benchmarks/RESULTS.md
   of 549ddf3), and those two time-stretched clips were the tempo search's once it ran last.
   Looking up Δt ± 1 without the frequency spread (three keys per pair) found about half as
   much; a lower peak threshold in time (a radius of 3 frames instead of 6) lost 1 s clips
   (39 -> 21 of 60 right, one seed).
2. Every query hash is looked up; each hit votes for a cell ``(episode, reference frame -
   query frame)``. A cell's score sums the votes within ``±tolerance`` frames, so small
   timing errors (re-encoding, reverb) still line up.
   A cell's evidence is the number of distinct query instants (anchor frames) among its
   votes: the peaks of one chord all pair with the same targets and would otherwise turn a
   single coincidence into many votes.
3. Changes of speed, pitch and tempo: a search over factors. A pass hashes the clip's peaks
   with times multiplied by a time factor and frequencies divided by a frequency factor
   (:class:`Pass`), undoing a speed change (both factors), a pitch shift (frequency) or a
   time stretch (time). The grids (``SPEEDS``, ``PITCHES``, ``TEMPOS``): speed ±5% and pitch
   ±1 semitone (and a twelfth) in steps of 0.5% of frequency, tempo 0.8-1.25 in steps of
   3.8%, the commonest first (PAL's 25/24 and 0.96, a player's 1.25x and 0.8x), one of each
   family in turn; 52 passes at the index's density. They run only when the passes at the
   unit change are not conclusive, six at a time (``passes_together``: one lookup and one
   sort for six passes took half the CPU of six, on a clip that matches nothing), and stop
   after the group holding the first conclusive one; the passes near it (within 0.75% in
   frequency and 6% in time) then run too, climbing to the strongest, which is the answer
   and gives the speed, pitch and tempo reported (a grid point: within 0.25% of the
   frequency factor, 1.9% of the tempo). An answer from the search needs
   ``change_min_score`` instants, not ``min_score``. When no pass of the search is
   conclusive, an answer the unit passes found stands (a weak clip of 1-2 s); else the
   strongest pass of all answers. Either way an answer so (every pass tried, none
   conclusive) needs ``weak_per_s`` instants per second of clip, at most ``weak_max_score``
   (step 4).

   Measured to choose (corpora like benchmarks/accuracy.py's, seeds 7 and 11, clips of
   2/3/5 s; /tmp scripts, figures in the commit): a pass 0.25% off the frequency factor keeps
   ~75% of the score, 0.5% off ~55%, 1% off ~25%; 2% off the time factor keeps ~90%, 3% off
   ~70%. The dense fingerprint scores only ~5% more than the index's own on changed clips at
   4x the cost, so the search uses the index's. Not tried: hashes invariant to the changes
   (frequency ratios and time ratios over three peaks, as Panako) need a second hash kind in
   every shard (a larger index, everything indexed again) for what the search finds without
   touching the index or the clean path. The search's price is paid by clips that match
   nothing: every pass runs (55 instead of 7), 2.2-2.7 times the previous matcher's CPU on
   the small corpus.
4. Significance: under chance the votes fall uniformly over all cells, so a cell's score is
   Poisson with mean ``lambda = hits * (2 * tolerance + 1) / frames``, except that chance
   votes come in clumps (musical events repeat together): with clump size ``k`` the score
   is ``k`` times a Poisson count of mean ``lambda / k``. ``E``, the expected number of
   chance cells (over every episode, offset and pass tried) that would have made an answer
   as strong (scoring at least as high, and at least what their pass's answers need: 7 in
   the search over changes), gives ``confidence = 1 / (1 + E ** b)``. ``k = 1.71`` and
   ``b = 0.63`` were fitted by logistic regression on right/wrong answers over the
   generated corpus (benchmarks/); the calibration table in benchmarks/RESULTS.md checks
   it. Because ``E`` grows with the number of cells, a larger library asks for more
   evidence, as it should.

   Where that model is wrong: on audio in no episode, music's chance scores fall off far
   more slowly than the model's (3,060 unseen clips of benchmarks/accuracy.py, seeds 0-5:
   the passes of the search scored >= 5 instants 3 times as often as the model expects, >= 6
   21 times, >= 7 57 times), and unseen audio can share short phrases with the library's
   music (clean 5 s windows of one unseen file lined up on 6 instants with one episode, at
   one offset, window after window). So a weak answer (5-7 instants) left once every pass
   was tried is often wrong, though its confidence (0.90-0.9999) promises more; over seeds
   0-6 such answers were right 14 times in 19 on 5 and 10 s clips (13 of the 14 a
   loudspeaker in a room; the 5 wrong ones unseen audio, none of 1,190 clips of 10 s of an
   episode answered so), 44 in 48 on 3 s clips (loudspeaker and reverb), 439 in 446 on 1-2 s
   clips, which offer few instants. The wrong ones on 5 s clips had 5 instants, on 10 s
   clips 6 and 7; the right ones on 5 s clips 5-7. So an answer that no pass settled needs
   ``weak_per_s`` (1.2) instants per second of clip, at most ``weak_max_score`` (8): 6 at
   5 s, 8 from 6.7 s on, nothing more than ``min_score`` up to 4 s. It is the correction for
   many hypotheses tried that the model's tail misses: a clip that long which lines up so
   little is more often similar music than the episode. Asking 8 of every clip from 4 s on
   did as well on unseen audio but lost 13 of 80 loudspeaker clips of 5 s (95% -> 79%);
   this loses about 4 (benchmarks/RESULTS.md).

5. Shared audio: an instant of the clip that lines up in several candidate episodes (an
   intro, a theme) is split between them (weight ``1/n``), and candidates are ranked by
   that weighted evidence. Episodes that score close to the best one on the same instants
   are its peers; unless the best one also has substantial evidence of its own, away from
   every instant its peers line up on (the clip runs past the intro into one episode), the
   clip is shared audio and the best episode and its peers are returned with
   ``ambiguous=True``. The same intro encoded differently in each episode (opus in one,
   flac in another) scores lower in the episodes the clip was not cut from, and lower still
   in a pass of few hashes: another episode with a quarter of the best one's evidence after
   the quick pass is checked by the whole fingerprint, and one still short of a peer after
   that by the dense one; the answer is read from the pass at the unit change with the most
   hashes among the strongest.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

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


def _grid(first: tuple[float, ...], values: list[float], *, factor: bool) -> tuple[float, ...]:
    """``first``, then the other ``values`` by the size of the change (factors by their log,
    semitones as they are), the upward one first among equals."""

    def size(v: float) -> float:
        return abs(math.log(v)) if factor else abs(v)

    rest = [v for v in values if all(abs(v - w) > 1e-9 for w in first)]
    return (*first, *sorted(rest, key=lambda v: (size(v), -v)))


# A frequency factor is searched in steps of 0.5%: a peak at the top of the band (224 bins up)
# moves half a bin 0.22% off the right factor, and at 0.25% off about half of a clip's hashes
# still form as in the index (measured: module docstring). Times are forgiving (at 2% off most
# still form: a hash's time distance is a few frames), so tempo goes in 3.8% steps, and a
# change of up to 2% is found by the speed passes whether the pitch followed or not: the pitch
# grid starts past them. First the PAL speed-up of film (25/24) and its inverse (0.96), and a
# player's 1.25x and 0.8x.
SPEEDS: tuple[float, ...] = _grid(
    (25 / 24, 0.96), [1.0 + 0.005 * k for k in range(-10, 11) if k and k != 8], factor=True
)
PITCHES: tuple[float, ...] = _grid(
    (), [k / 12 for k in range(-13, 14) if abs(k) >= 4], factor=False
)
TEMPOS: tuple[float, ...] = _grid(
    (1.25, 0.8), [1.25 ** (k / 6) for k in range(-6, 7) if k], factor=True
)


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
    # The search over changes of the audio, after the passes at the unit change, in this
    # order, each pass only when the ones before it were not conclusive (module docstring):
    # playback speeds (resampled: pitch follows), pitch shifts in semitones at the same tempo,
    # time stretches at the same pitch. An empty tuple leaves a search out.
    speeds: tuple[float, ...] = SPEEDS
    pitches: tuple[float, ...] = PITCHES
    tempos: tuple[float, ...] = TEMPOS
    # How a pass of the search fingerprints the clip: peaks per second (None: the index's
    # own density) and targets per anchor.
    change_peaks_per_second: float | None = None
    change_fanout: int = 4
    # Passes of the search looked up together (one lookup, one sort): the search stops
    # after the group holding its first conclusive pass.
    passes_together: int = 6
    # The spread pass, after the dense one (module docstring, step 1): each pair also hashed
    # with its frequencies rounded to the other neighbouring bin (hash_peaks' spread), at
    # this density and fan-out (0 leaves it out), answering from spread_min_score instants.
    # The index's density (None, fan-out 4) found about half as much of what it adds.
    spread_peaks_per_second: float | None = 30.0
    spread_fanout: int = 10
    spread_min_score: int = 7
    # The room pass, last (module docstring, step 1): the spread pass's keys,
    # each also with its time distance one frame shorter and one longer (hash_peaks'
    # time_spread; twelve keys per pair), at this density and fan-out (0 leaves it out). It
    # answers from room_min_score instants, only where its pass alone expects fewer than
    # room_max_chance chance cells that strong, and only at a cell that a pass before it
    # found best too (the same episode, the offset within room_agree_frames). It costs audio
    # in no episode one more pass after the search over changes.
    room_fanout: int = 10
    room_peaks_per_second: float | None = 30.0
    room_time_spread: int = 1
    room_min_score: int = 7
    room_max_chance: float = 2e-6
    room_agree_frames: int = 8
    tolerance: int = 2
    min_score: int = 5
    # The evidence an answer from the search over changes needs. Its 52 passes give chance
    # many more cells, and music's chance scores have a longer tail than the model's: at 5
    # the search matched 7 of 500 clips of unseen audio, at 7 one (the unit passes alone,
    # at 5, two).
    change_min_score: int = 7
    min_confidence: float = 0.9
    # A clip that no pass settled (every pass tried: the search over changes too) is
    # answered only from weak_per_s instants per second of clip, at most weak_max_score
    # (module docstring, step 4): on 5-10 s clips such answers of 5-7 instants were unseen
    # audio 5 times in 19.
    weak_per_s: float = 1.2
    weak_max_score: int = 8
    early_exit_confidence: float = 0.999
    clump: float = 1.71
    calibration_slope: float = 0.63
    ambiguity_ratio: float = 0.5
    # After the quick pass, another episode with at least this share of the best one's
    # evidence (and min_score) is checked with the whole fingerprint: the same intro encoded
    # differently (opus beside flac) scores 30-45% of the clip's own file in the quick pass's
    # few hashes and 55-65% in the whole one's.
    peer_check_ratio: float = 0.25
    own_evidence: float = 0.3
    own_gap_s: float = 1.0
    max_candidates: int = 16
    # At most this many hits per query hash are scored; past it the commonest keys are left
    # out. Bounds the work on a large library (posting lists grow with it) and leaves a small
    # one untouched. Measured in benchmarks/RESULTS.md.
    hits_per_hash: int = 100

    def __post_init__(self) -> None:
        if any(not 0.8 <= s <= 1.25 or s == 1.0 for s in self.speeds):
            raise ParameterError("speeds must be factors between 0.8 and 1.25, other than 1")
        if any(not -12.0 <= p <= 12.0 or p == 0.0 for p in self.pitches):
            raise ParameterError("pitches must be semitones between -12 and 12, other than 0")
        if any(not 0.5 <= t <= 2.0 or t == 1.0 for t in self.tempos):
            raise ParameterError("tempos must be factors between 0.5 and 2, other than 1")
        if self.change_fanout < 1 or self.passes_together < 1:
            raise ParameterError(
                "change_fanout and passes_together must be >= 1, got "
                f"{self.change_fanout} and {self.passes_together}"
            )
        if self.tolerance < 0 or not 1 <= self.min_score <= self.change_min_score:
            raise ParameterError(
                "tolerance must be >= 0 and 1 <= min_score <= change_min_score, got "
                f"{self.tolerance}, {self.min_score} and {self.change_min_score}"
            )
        if self.weak_per_s < 0 or self.weak_max_score < self.min_score:
            raise ParameterError(
                "weak_per_s must be >= 0 and weak_max_score >= min_score, got "
                f"{self.weak_per_s} and {self.weak_max_score}"
            )
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


@dataclass(frozen=True, kw_only=True)
class Pass:
    """One way of fingerprinting a clip and scoring it against the index.

    Attributes
    ----------
    name : str
        The pass's kind: ``quick``, ``whole``, ``dense``, ``spread``, or the change it undoes:
        ``speed``, ``pitch``, ``tempo`` (see :class:`~.records.Match` for what they mean).
    peaks_per_second : float or None
        Peak density of the clip's fingerprint; ``None`` is the index's own.
    fanout : int
        Targets paired with each anchor peak.
    hits_per_hash : int
        Hits scored per query hash; past it the commonest keys are left out.
    min_score : int
        Evidence (distinct instants of the clip) an answer from this pass needs.
    speed, pitch, tempo : float
        The change undone before hashing: a resampling factor, semitones, a time stretch.
    spread : bool
        Each pair also hashed with its frequencies rounded to the other neighbouring bin.
    time_spread : int
        Each pair also hashed with its time distance moved by ``±1 .. ±time_spread`` frames.
    max_chance : float
        An answer from this pass needs its best cell to be one that chance makes fewer than
        this many times in the pass (the chance model of step 4, this pass alone).
    agree_frames : int or None
        If set, an answer from this pass needs its best cell to be the best cell of one of
        the passes before it at the unit change too: the same episode, the offset within
        this many frames.
    """

    name: str
    peaks_per_second: float | None
    fanout: int
    hits_per_hash: int
    min_score: int
    speed: float = 1.0
    pitch: float = 0.0
    tempo: float = 1.0
    spread: bool = False
    time_spread: int = 0
    max_chance: float = math.inf
    agree_frames: int | None = None

    @property
    def tolerant(self) -> bool:
        """Whether the pass hashes each pair several ways (``spread``, ``time_spread``)."""
        return self.spread or self.time_spread > 0

    @property
    def freq_factor(self) -> float:
        """How many times higher the clip's frequencies are than the episode's."""
        return self.speed * 2.0 ** (self.pitch / 12.0)

    @property
    def time_factor(self) -> float:
        """How many times faster the clip plays than the episode."""
        return self.speed * self.tempo

    @property
    def label(self) -> str:
        """The name, with the factor for the passes that undo a change (``speed x1.04``)."""
        if self.name == "speed":
            return f"speed x{self.speed:.4g}"
        if self.name == "pitch":
            return f"pitch {self.pitch:+.3g}"
        if self.name == "tempo":
            return f"tempo x{self.tempo:.4g}"
        return self.name


@dataclass
class _Candidate:
    episode: int
    score: int  # distinct query instants among the hits that line up
    hits: np.ndarray  # query hash indices that line up
    offset_frames: float
    confidence: float = 0.0
    weighted: float = 0.0


@dataclass
class PassResult:
    """What one pass found: candidates best first, and what chance would give."""

    step: Pass
    candidates: list[_Candidate]
    n_hits: int  # hits scored: the chance model's count
    times: np.ndarray  # anchor time of each query hash, in the episode's frames
    n_hashes: int

    @property
    def score(self) -> int:
        return self.candidates[0].score if self.candidates else 0


class Verdict(enum.Enum):
    """What a pass's best candidate says about going on."""

    SETTLED = "settled"  # conclusive, one episode
    SHARED = "shared"  # conclusive, but another episode scores close: shared audio or close
    SHORT = "short"  # reaches min_score, not conclusive
    WEAK = "weak"  # below min_score


# Verdicts that end the cascade after any pass but the quick one.
_CONCLUSIVE = (Verdict.SETTLED, Verdict.SHARED)
# The passes that undo a change of the audio, and those before them that a room pass's
# answer must agree with.
_CHANGES = ("speed", "pitch", "tempo")
_UNIT = ("quick", "whole", "dense", "spread")


def _log_expected(score: int, n_hits: int, frames: float, mp: MatchParams) -> float:
    """Log of the number of cells of one pass expected to score ``score`` by chance (module
    docstring)."""
    width = 2 * mp.tolerance + 1
    frames = max(frames, width)
    lam = max(n_hits * width / frames, 1e-12) / mp.clump
    s = score / mp.clump
    # math.lgamma, not scipy.special.gammaln: the score is one number, and importing
    # scipy.special costs a one-shot `citywok match` about a quarter of a second.
    return math.log(frames / width) + s * math.log(lam) - lam - math.lgamma(s + 1)


def _confidence(
    score: int, n_hits: int, frames: float, mp: MatchParams, tried: list[PassResult]
) -> float:
    """Calibrated probability that a cell scoring ``score`` is not chance (module docstring).

    ``E`` counts the cells of every pass in ``tried``, each at the score that would have
    made it an answer as strong (at least its pass's ``min_score``: a pass of the search over
    changes answers only from ``change_min_score`` on)."""
    needs: dict[int, int] = {}
    for r in tried:
        m = max(score, r.step.min_score)
        needs[m] = needs.get(m, 0) + 1
    logs = [math.log(k) + _log_expected(m, n_hits, frames, mp) for m, k in needs.items()]
    top = max(logs)
    log_expected = top + math.log(sum(math.exp(v - top) for v in logs))
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


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for a 1-D array: its distinct values, sorted. (numpy 2's
    ``unique`` imports ``numpy.ma`` on its first call, 30 ms of a one-shot ``citywok match``.)"""
    a = np.sort(values)
    keep = np.ones(a.size, dtype=bool)
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _run_pass(clip: _Clip, step: Pass) -> PassResult:
    """Fingerprint the clip as ``step`` says, look its hashes up, and score the cells."""
    return _run_passes(clip, [step])[0]


def _run_passes(clip: _Clip, steps: list[Pass]) -> list[PassResult]:
    """:func:`_run_pass` for several passes at once: one lookup and one sort of the cells,
    each pass's cells apart from the others' (a pass's results are those it gets alone, but
    for the hit budget, which is shared: ``hits_per_hash`` times all their hashes)."""
    index, mp = clip.index, clip.match_params
    all_hashes = [
        hash_peaks(
            clip.peaks(step.peaks_per_second),
            params=index.params,
            fanout=step.fanout,
            time_factor=step.time_factor,
            freq_factor=step.freq_factor,
            spread=step.spread,
            time_spread=step.time_spread,
        )
        for step in steps
    ]
    sizes = [len(h) for h in all_hashes]
    first = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    together = len(steps) > 1  # one pass alone (the unit passes) skips the bookkeeping
    keys = np.concatenate([h.keys for h in all_hashes]) if together else all_hashes[0].keys
    times = np.concatenate([h.times for h in all_hashes]) if together else all_hashes[0].times
    pass_of = np.repeat(np.arange(len(steps), dtype=np.int64), sizes)
    budget = sum(step.hits_per_hash * n for step, n in zip(steps, sizes, strict=True))
    empty = [
        PassResult(step, [], 0, h.times, len(h)) for step, h in zip(steps, all_hashes, strict=True)
    ]
    if keys.size == 0:
        return empty
    order = np.argsort(keys, kind="stable")
    qi, ep, frame = index.lookup(keys[order], max_hits=budget)
    if qi.size == 0:
        return empty
    qi = order[qi]
    n_episodes = len(index.episodes)
    delta = frame - np.rint(times[qi]).astype(np.int64)
    # A cell is (pass, episode, offset): the passes' cells never meet.
    cell = (((pass_of[qi] * n_episodes + ep) if together else ep) << 32) + (delta + (1 << 31))
    # The hits of one cell end up together; their order within it does not matter.
    by_cell = np.argsort(cell)
    sorted_cells = cell[by_cell]
    starts = np.flatnonzero(np.concatenate(([True], sorted_cells[1:] != sorted_cells[:-1])))
    cells = sorted_cells[starts]
    csum = np.append(starts, sorted_cells.size)  # hits before each distinct cell, and all
    lo, hi = _windows(cells, mp.tolerance)
    smoothed = csum[hi] - csum[lo]
    # Best cell of each (pass, episode) (the first of equals), then each pass's strongest
    # episodes (the lower episode first among equals). Cells are sorted by pass and episode:
    # one run each.
    n = cells.size
    group = cells >> 32
    run_start = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    run_best = np.maximum.reduceat(smoothed, run_start)
    at_best = smoothed == np.repeat(run_best, np.diff(np.append(run_start, n)))
    first_best = np.minimum.reduceat(np.where(at_best, np.arange(n), n), run_start)
    if together:
        run_pass = group[run_start] // n_episodes
        pass_runs = np.searchsorted(run_pass, np.arange(len(steps) + 1))
        n_hits = np.bincount(pass_of[qi], minlength=len(steps))
    else:
        pass_runs, n_hits = np.array([0, run_start.size]), np.array([qi.size])
    results = []
    for k, (step, hashes) in enumerate(zip(steps, all_hashes, strict=True)):
        a, b = pass_runs[k], pass_runs[k + 1]
        best = first_best[a:b][np.argsort(-run_best[a:b], kind="stable")[: mp.max_candidates]]
        out = []
        for c in best:
            # A cell's evidence (distinct anchor instants) is at most its hits: one with fewer
            # than min_score hits can neither be an answer nor make another one shared.
            if smoothed[c] < max(2, mp.min_score):
                break
            sel = by_cell[csum[lo[c]] : csum[hi[c]]]
            hits = _distinct(qi[sel]) - first[k]
            # Evidence is counted in distinct anchor instants, not hashes: the simultaneous
            # peaks of one chord pair with the same targets, and one coincidence would count
            # many times.
            events = _distinct(np.rint(hashes.times[hits])).size
            offsets = frame[sel] - times[qi[sel]]
            episode = int(group[c] % n_episodes)
            out.append(_Candidate(episode, int(events), hits, float(np.median(offsets))))
        out.sort(key=lambda c: -c.score)
        results.append(PassResult(step, out, int(n_hits[k]), hashes.times, len(hashes)))
    return results


class _Clip:
    """A clip being matched: its spectrogram once, its peaks once per density, the passes
    run so far."""

    def __init__(self, samples: np.ndarray, index: Searchable, match_params: MatchParams):
        self.index, self.match_params = index, match_params
        self.spec = spectrogram(samples, params=index.params)
        self.duration_s = samples.size / index.params.sample_rate
        self.frames = float(index.total_frames)
        self.results: list[PassResult] = []
        self._peaks: dict[float | None, np.ndarray] = {}

    def peaks(self, density: float | None) -> np.ndarray:
        if density not in self._peaks:
            self._peaks[density] = find_peaks(
                self.spec, params=self.index.params, peaks_per_second=density
            )
        return self._peaks[density]

    def run(self, step: Pass) -> Verdict:
        """Run a pass, keep its result, and say what its best candidate settles."""
        return self.run_together([step])[0]

    def run_together(self, steps: list[Pass]) -> list[Verdict]:
        """Run passes at once (:func:`_run_passes`), keep their results in order, and say
        what each one's best candidate settles, as if they had run one after another."""
        mp = self.match_params
        verdicts = []
        for result in _run_passes(self, steps):
            self.results.append(result)
            step = result.step
            if not result.candidates or result.score < step.min_score:
                verdicts.append(Verdict.WEAK)
                continue
            best = result.candidates[0]
            # Every pass tried so far is one more chance to meet chance.
            p = _confidence(best.score, result.n_hits, self.frames, mp, self.results)
            if (
                best.score < max(2 * mp.min_score, step.min_score)
                or p < mp.early_exit_confidence
                or not self._admissible(result)
            ):
                verdicts.append(Verdict.SHORT)
                continue
            ratio = mp.peer_check_ratio if step.name == "quick" else mp.ambiguity_ratio
            need = max(mp.min_score, ratio * best.score)
            close = [c for c in result.candidates[1:] if c.score >= need]
            verdicts.append(Verdict.SHARED if close else Verdict.SETTLED)
        return verdicts

    def undecided(self) -> bool:
        """Whether the last pass has an episode scoring between ``peer_check_ratio`` and
        ``ambiguity_ratio`` of its best one: maybe a peer, maybe not."""
        mp, result = self.match_params, self.results[-1]
        low = max(mp.min_score, mp.peer_check_ratio * result.score)
        return any(low <= c.score < mp.ambiguity_ratio * result.score for c in result.candidates)

    def _admissible(self, r: PassResult) -> bool:
        """Whether ``r``'s best candidate meets its pass's ``max_chance`` and
        ``agree_frames``."""
        if not r.candidates or self._chance(r) > math.log(r.step.max_chance):
            return False
        if r.step.agree_frames is None:
            return True
        best = r.candidates[0]
        return any(
            o.candidates
            and o.step.name in _UNIT
            and o.candidates[0].episode == best.episode
            and abs(o.candidates[0].offset_frames - best.offset_frames) <= r.step.agree_frames
            for o in self.results
            if o is not r
        )

    def _chance(self, r: PassResult) -> float:
        """Log of the cells of ``r``'s pass expected by chance to score its best score."""
        if not r.candidates:
            return math.inf
        return _log_expected(r.score, r.n_hits, self.frames, self.match_params)

    def answer(self, among: list[PassResult] | None = None, *, floor: int = 0) -> MatchResult:
        """The strongest pass's candidates (of ``among``, by default every pass run), their
        confidence (counting every pass tried), and which of them are the answer: none
        scoring under ``floor`` (or their pass's ``min_score``)."""
        mp = self.match_params
        pool = self.results if among is None else among
        chosen = max((r for r in pool if not r.step.tolerant), key=_strength, default=None)
        # The spread and room passes look four and twelve keys up per pair: chance gives them
        # that many times the hits, so they are weighed against the others by the chance
        # cells their score implies, and only where they reach their own min_score (and
        # max_chance).
        for r in pool:
            if r.step.tolerant and (
                chosen is None
                or (
                    r.score >= r.step.min_score
                    and self._chance(r) < self._chance(chosen)
                    and self._admissible(r)
                )
            ):
                chosen = r
        assert chosen is not None
        for c in chosen.candidates:
            c.confidence = _confidence(c.score, chosen.n_hits, self.frames, mp, self.results)
        fs, step = self.index.params.frame_seconds, chosen.step
        matches, ambiguous = _decide(
            chosen.candidates, chosen.times, mp, chosen.step.min_score,
            gap_frames=mp.own_gap_s / fs, floor=floor,
        )  # fmt: skip
        return MatchResult(
            matches=tuple(
                Match(
                    episode_id=self.index.episodes[c.episode].episode_id,
                    source=self.index.episodes[c.episode].source,
                    season=self.index.episodes[c.episode].season,
                    offset_s=max(0.0, c.offset_frames * fs),
                    score=c.score,
                    confidence=c.confidence,
                    speed=step.speed,
                    pitch=step.pitch,
                    tempo=step.tempo,
                )
                for c in matches
            ),
            ambiguous=ambiguous,
            query_hashes=max(r.n_hashes for r in self.results),
            passes=tuple(r.step.label for r in self.results),
        )


def _strength(result: PassResult) -> tuple[int, int]:
    """How a pass ranks for the answer: its evidence, then, among the passes at the unit
    change, the more hashes (the whole fingerprint over the quick pass's few: it sees more of
    each peer of a shared intro). Among passes of the search, the first of equals."""
    return result.score, result.n_hashes if result.step.name not in _CHANGES else 0


def _decide(
    cands: list[_Candidate],
    times: np.ndarray,
    mp: MatchParams,
    min_score: int,
    *,
    gap_frames: float,
    floor: int = 0,
) -> tuple[list[_Candidate], bool]:
    need = max(min_score, floor)
    sig = [c for c in cands if c.score >= need and c.confidence >= mp.min_confidence]
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
    # Shared audio unless the best episode has substantial evidence of its own: instants
    # more than own_gap_s from any its peers line up on (the clip runs on past the intro
    # into one episode). Instants among the peers' are the same audio encoded differently:
    # a clip cut from the opus file of an intro matches that file on a third more instants
    # than the flac and mp3 files of the same intro, spread all through it.
    shared = np.fromiter(set().union(*(events[i] for i in peers)), np.int64)
    shared.sort()
    own = np.fromiter(best_events.difference(shared.tolist()), np.int64)
    at = np.searchsorted(shared, own)
    gap = np.minimum(
        np.abs(own - shared[np.maximum(at - 1, 0)]),
        np.abs(shared[np.minimum(at, shared.size - 1)] - own),
    )
    if np.count_nonzero(gap > gap_frames) >= max(min_score, mp.own_evidence * len(best_events)):
        return [best], False
    return [best, *sorted((sig[i] for i in peers), key=lambda c: -c.score)], True


def passes(params: FingerprintParams, mp: MatchParams = DEFAULT_MATCH_PARAMS) -> dict[str, Pass]:
    """The cascade's passes by label, cheapest first (see the module docstring)."""
    return dict(_passes(params, mp))


@functools.lru_cache(maxsize=16)
def _passes(params: FingerprintParams, mp: MatchParams) -> dict[str, Pass]:
    # Built once per settings: making 55 records took a clean clip's match 10% longer.
    quick = Pass(
        name="quick",
        peaks_per_second=None,
        fanout=min(mp.quick_fanout, params.fanout),
        hits_per_hash=mp.quick_hits_per_hash,
        min_score=mp.min_score,
    )
    whole = Pass(
        name="whole",
        peaks_per_second=None,
        fanout=params.fanout,
        hits_per_hash=mp.hits_per_hash,
        min_score=mp.min_score,
    )
    dense = Pass(
        name="dense",
        peaks_per_second=mp.peaks_per_second,
        fanout=mp.fanout,
        hits_per_hash=mp.hits_per_hash,
        min_score=mp.min_score,
    )
    out = [quick] + ([whole] if quick.fanout < params.fanout else []) + [dense]
    if mp.spread_fanout:
        out.append(
            Pass(
                name="spread",
                peaks_per_second=mp.spread_peaks_per_second,
                fanout=mp.spread_fanout,
                hits_per_hash=mp.hits_per_hash,
                min_score=mp.spread_min_score,
                spread=True,
            )
        )
    change = Pass(
        name="change",
        peaks_per_second=mp.change_peaks_per_second,
        fanout=mp.change_fanout,
        hits_per_hash=mp.hits_per_hash,
        min_score=mp.change_min_score,
    )
    families = [
        [dataclasses.replace(change, name="speed", speed=s) for s in mp.speeds],
        [dataclasses.replace(change, name="pitch", pitch=p) for p in mp.pitches],
        [dataclasses.replace(change, name="tempo", tempo=t) for t in mp.tempos],
    ]
    # One of each family in turn: each lists its commonest changes first (PAL's speed-up and
    # a player's 1.25x come early), so no family waits behind another's whole grid.
    for k in range(max(len(f) for f in families)):
        out += [f[k] for f in families if k < len(f)]
    if mp.room_fanout:
        out.append(
            Pass(
                name="room",
                peaks_per_second=mp.room_peaks_per_second,
                fanout=mp.room_fanout,
                hits_per_hash=mp.hits_per_hash,
                min_score=mp.room_min_score,
                spread=True,
                time_spread=mp.room_time_spread,
                max_chance=mp.room_max_chance,
                agree_frames=mp.room_agree_frames,
            )
        )
    return {p.label: p for p in out}


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
    clip = _Clip(samples, index, match_params)
    cascade = _passes(index.params, match_params)
    # The quick pass (the index's peaks, a smaller fan-out) settles clean and mildly degraded
    # clips of one episode.
    verdict = clip.run(cascade["quick"])
    if verdict is Verdict.SETTLED or (verdict is Verdict.SHARED and "whole" not in cascade):
        return clip.answer()
    # Another episode close to the best (shared audio: the whole fingerprint names every
    # episode it is in) or some evidence short of conclusive (twice the hashes usually settle
    # it, for a fraction of the dense pass's cost).
    asks_whole = "whole" in cascade and verdict in (Verdict.SHARED, Verdict.SHORT)
    if asks_whole:
        verdict = clip.run(cascade["whole"])
        # An episode still between a peer and not (a differently encoded intro): the dense
        # fingerprint decides it.
        if verdict in _CONCLUSIVE and not clip.undecided():
            return clip.answer()
    # Weak evidence: a denser fingerprint, then the search over changes of speed, pitch and
    # tempo until a pass is conclusive.
    if clip.run(cascade["dense"]) in _CONCLUSIVE:
        return clip.answer()
    if "spread" in cascade and clip.run(cascade["spread"]) in _CONCLUSIVE:
        return clip.answer()
    unit = list(clip.results)
    # What a weak answer needs once every pass has been tried (module docstring, step 4).
    floor = _weak_floor(clip.duration_s, match_params)
    found_at_unit = bool(clip.answer(floor=floor).matches)
    search = [step for step in cascade.values() if step.name in _CHANGES]
    # A few passes at a time: one lookup for them all costs much less than one each, and a
    # changed clip is usually found among the first (the commonest changes come first).
    for at in range(0, len(search), match_params.passes_together):
        chunk = search[at : at + match_params.passes_together]
        verdicts = clip.run_together(chunk)
        conclusive = [s for s, v in zip(chunk, verdicts, strict=True) if v in _CONCLUSIVE]
        if conclusive:
            _climb(clip, conclusive[0], search)
            return clip.answer()
    # The room pass last: it costs a clip no other pass settles as much as the search over
    # changes does, and a changed clip is the search's to settle.
    if "room" in cascade:
        if clip.run(cascade["room"]) in _CONCLUSIVE:
            return clip.answer()
        unit.append(clip.results[-1])
        found_at_unit = found_at_unit or bool(clip.answer(unit, floor=floor).matches)
    # Nothing conclusive: an answer the unit passes found stands (a short or degraded clip;
    # a pass of the search scoring higher on a few chance instants must not displace it),
    # else the strongest pass of all. A long clip no pass settled needs more evidence.
    return clip.answer(unit if found_at_unit else None, floor=floor)


def _weak_floor(duration_s: float, mp: MatchParams) -> int:
    """The instants an answer that no pass settled needs, beside its pass's ``min_score``:
    ``weak_per_s`` per second of clip, at most ``weak_max_score``."""
    # Less a hair: a product that should be whole can land just above it in binary.
    return min(mp.weak_max_score, math.ceil(mp.weak_per_s * duration_s - 1e-9))


def _climb(clip: _Clip, step: Pass, search: list[Pass]) -> None:
    """From a conclusive pass of the search, run the passes near it (:func:`_neighbours`),
    and again around the strongest of them, until the strongest is the one climbed from.

    The first conclusive pass can be a neighbour of the change made: a pitch pass finds a
    clip sped up 5% with its times 5% off, and the speed pass at that factor scores twice as
    high and gives the offset exactly."""
    for _ in range(_MAX_CLIMB):
        ran = {r.step for r in clip.results}
        near = [p for p in _neighbours(step, search) if p not in ran]
        if near:
            clip.run_together(near)
        best = max((r for r in clip.results if r.step.name in _CHANGES), key=lambda r: r.score).step
        if best == step:
            return
        step = best


# How far from a conclusive pass the change made can lie: a frequency factor found to within
# a step and a half of the grid, a time factor only to within 6%.
_NEAR_FREQ, _NEAR_TIME = 0.0075, 0.06
_MAX_CLIMB = 4


def _neighbours(step: Pass, search: list[Pass]) -> list[Pass]:
    """The passes of the search whose factors lie close to ``step``'s (``_NEAR_*``)."""
    return [
        p
        for p in search
        if p != step
        and abs(math.log(p.freq_factor / step.freq_factor)) <= _NEAR_FREQ
        and abs(math.log(p.time_factor / step.time_factor)) <= _NEAR_TIME
    ]
