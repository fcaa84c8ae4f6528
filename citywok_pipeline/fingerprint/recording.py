"""Long recordings as segments: which stretches of a recording come from which episode.

A compilation, a recorded broadcast or a live stream holds several excerpts of episodes with
other audio between them. :class:`Segmenter` takes the recording as it arrives (any number of
sample chunks) and gives back each :class:`Segment` as soon as it is settled; memory stays
bounded however long the input runs. :func:`segment_samples` does the same for a whole array.

How
---
1. **Windows.** Every ``hop_s`` the last ``window_s`` seconds are matched by
   :func:`~citywok_pipeline.fingerprint.matcher.match_samples` (its cheapest pass first, so
   windows of unseen audio or of one episode cost little). A match says which episode the
   window is from, where it starts in it and how the audio was changed (speed, pitch,
   tempo): a *line* ``e = intercept + slope * t`` from recording time to episode time, its
   slope the time factor (``speed * tempo``). Windows that name the same episode on the same
   line (within ``line_tolerance_s``) make one *track*.
2. **Hits along the line.** The recording is also fingerprinted once, as it arrives (a hash is
   final once ``lookahead_s`` of audio follows its anchor), and each hash is looked up once.
   The hits that fall on an open track's line (its episode, the reference frame within
   ``±tolerance`` frames of the line) say where the excerpt's audio is, to a peak's spacing:
   the first and last of them are the segment's boundaries, much finer than a window (a
   window needs a second or so of the excerpt to match; a line needs one peak pair). The
   line's slope is fitted to its hits, so a recording played a little fast stays on it.
3. **Settling.** A track ends when its line has gone ``gap`` seconds without a hit (a gap
   adapted to the hit rate seen so far: a noisy excerpt has sparser hits) and a window has
   since failed to agree with it: about 2.5 s after its excerpt ends. It becomes a segment
   if at least ``min_windows`` windows agreed with it and its hits span ``min_span_s``
   (overlapping windows all see one short coincidence; an excerpt's hits run through it).
4. **Shared audio.** A window of an intro matches several episodes at once (``ambiguous``);
   their tracks run side by side. When all of them have ended: if one runs on for
   ``own_s`` past the others (the recording goes on from the intro into that episode), it is
   the segment, from the intro on, as the matcher answers for a clip that runs past an
   intro; otherwise the stretch is one segment with ``ambiguous=True`` listing every episode
   (``matches``). The final answer joins pieces of one excerpt that a lull in the evidence
   split (the same episode on the same line, at most ``join_gap_s`` apart).

Audio in no episode gives no segment: gaps between segments are that audio.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .hashes import hash_peaks, unpack
from .matcher import DEFAULT_MATCH_PARAMS, MatchParams, Searchable, match_samples
from .params import ParameterError
from .peaks import find_peaks
from .spectrogram import spectrogram

__all__ = [
    "DEFAULT_SEGMENT_PARAMS",
    "RecordingResult",
    "Segment",
    "SegmentMatch",
    "SegmentParams",
    "Segmenter",
    "segment_samples",
]


@dataclass(frozen=True, kw_only=True)
class SegmentParams:
    """How a recording is cut into windows and its tracks settled (query side only).

    Attributes
    ----------
    window_s, hop_s : float
        Length of the windows matched and the step between them, in seconds.
    line_tolerance_s : float
        Windows whose lines differ by at most this (in episode time) agree.
    tolerance : int
        A hit lies on a line when its reference frame is within this many frames of it.
    lookahead_s : float
        Audio that must follow a hash's anchor before the hash is final (peaks are picked
        against their neighbours half a second either side, targets follow the anchor).
    min_gap_s, max_gap_s : float
        A track ends after this long without a hit on its line: ``gap_hits`` mean spacings
        of its hits so far, clamped to this range.
    gap_hits : float
    min_windows : int
        Windows that must agree for a track to become a segment.
    min_span_s : float
        And the span of its hits must be at least this long (two pieces of music can share a
        few notes: the windows over them agree, the hits stop).
    own_s : float
        An episode of shared audio is the answer alone when its line has audio this long
        before or after every episode it shared windows with.
    join_gap_s : float
        Pieces of one line at most this far apart are one segment in the final answer.
    peaks_per_second, fanout : float, int
        Density and fan-out of the hashes looked up along lines (as the matcher's dense pass:
        more query hashes, more of the index's found).
    history_s : float
        Audio (and hits) kept behind the newest sample, for the start of a new track.
    search_every : int
        Every this many windows one runs the matcher's whole cascade, its search over speed,
        pitch and tempo changes included (and every one while a changed recording is
        followed); the others stop after its passes at the unit change. Unseen audio is what reaches that search (nothing matches it), and it is most
        of what a long recording holds: this keeps an hour of it affordable, and finds a
        changed recording within ``search_every * hop_s`` seconds.
    """

    window_s: float = 3.0
    hop_s: float = 0.5
    line_tolerance_s: float = 0.3
    tolerance: int = 2
    lookahead_s: float = 1.0
    min_gap_s: float = 0.8
    max_gap_s: float = 2.0
    gap_hits: float = 12.0
    min_windows: int = 3
    min_span_s: float = 2.0
    own_s: float = 1.5
    join_gap_s: float = 4.0
    peaks_per_second: float = 30.0
    fanout: int = 10
    history_s: float = 12.0
    search_every: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.hop_s <= self.window_s:
            raise ParameterError(
                f"need 0 < hop_s <= window_s, got {self.hop_s} and {self.window_s}"
            )
        if self.history_s < self.window_s + self.max_gap_s + self.lookahead_s:
            raise ParameterError("history_s must cover a window, the longest gap and lookahead")
        if not 0 < self.min_gap_s <= self.max_gap_s:
            raise ParameterError("need 0 < min_gap_s <= max_gap_s")
        if self.min_windows < 1 or self.tolerance < 0 or self.fanout < 1:
            raise ParameterError("min_windows and fanout must be >= 1, tolerance >= 0")
        if self.search_every < 1:
            raise ParameterError(f"search_every must be >= 1, got {self.search_every}")


DEFAULT_SEGMENT_PARAMS = SegmentParams()


@dataclass(frozen=True, kw_only=True)
class SegmentMatch:
    """One episode a segment's audio is in (several for shared audio)."""

    episode_id: str
    source: str
    season: str
    offset_s: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "source": self.source,
            "season": self.season,
            "offset_s": round(self.offset_s, 2),
            "confidence": round(self.confidence, 3),
        }


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A stretch ``[start_s, end_s)`` of the recording that is audio of an episode.

    ``offset_s`` is the episode's second at ``start_s``; ``speed``, ``pitch`` and ``tempo``
    how the recording was changed from the episode, as in :class:`~.records.Match` (1.01: 1%
    fast, pitch following; an episode second lasts ``1 / (speed * tempo)`` seconds). With ``ambiguous`` the audio is shared by
    several episodes (an intro), all of them in ``matches``, the best first; otherwise
    ``matches`` holds the one episode.
    """

    episode_id: str
    source: str
    season: str
    start_s: float
    end_s: float
    offset_s: float
    confidence: float
    speed: float
    ambiguous: bool
    pitch: float = 0.0
    tempo: float = 1.0
    matches: tuple[SegmentMatch, ...] = ()
    windows: int = 0
    hits: int = 0
    # The track it came from, whose hits may still run on after it was returned (live).
    _track: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "episode_id": self.episode_id,
            "source": self.source,
            "season": self.season,
            "start_s": round(self.start_s, 2),
            "end_s": round(self.end_s, 2),
            "offset_s": round(self.offset_s, 2),
            "confidence": round(self.confidence, 3),
            "speed": round(self.speed, 4),
            "ambiguous": self.ambiguous,
            "pitch": round(self.pitch, 2),
            "tempo": round(self.tempo, 4),
        }
        if self.ambiguous:
            out["matches"] = [m.to_dict() for m in self.matches]
        return out


@dataclass(frozen=True, kw_only=True)
class RecordingResult:
    """The answer for one recording: its segments in order, and how its reading ended.

    ``ended`` is ``"end"`` (the input ended), ``"limit"`` (cut at the duration limit: a
    warning says so) or ``"stalled"``/``"error"`` for a live input that stopped early
    (``reason`` says why); the segments are those settled up to then.
    """

    duration_s: float
    segments: tuple[Segment, ...]
    ended: str = "end"
    reason: str = ""
    warnings: tuple[str, ...] = ()

    def to_dict(self, query: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": query,
            "duration_s": round(self.duration_s, 2),
            "segments": [s.to_dict() for s in self.segments],
            "ended": self.ended,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


# ----------------------------------------------------------------------------------------------
# Tracks: windows that agree on an episode and a line, and the hits along it.

# A line's slope is fitted from its hits once they span this long (before: the window's).
_FIT_SPAN_S = 2.0
_FIT_MIN_HITS = 10
# Seconds of an excerpt a window holds at least when it matches it (about 0.7 s was the least
# seen on the benchmark's recordings, clean, noisy and reverberant).
_WINDOW_NEEDS_S = 0.6
# Seconds of hit times a track keeps at its start and at its end.
_EDGE_S = 6.0

# MatchParams' searches over changes of the audio (the fields there are).
_CHANGE_SEARCH = ("speeds", "pitches", "tempos")

# How a window's audio was changed from the episode: (speed, pitch in semitones, tempo).
_Change = tuple[float, float, float]
_UNCHANGED: _Change = (1.0, 0.0, 1.0)


@dataclass(eq=False)
class _Track:
    """Windows that named one episode on one line, and the hits along that line.

    The line maps recording frames ``q`` to the episode's frames ``r``: through ``(q0, r0)``
    with slope ``slope`` from the window that opened the track, then fitted to the hits by
    least squares (sums about ``(q0, r0)``), so a recording played a little fast or slow
    stays on it.
    """

    episode: int
    change: _Change  # the one its hits are hashed for: what most of its windows found
    q0: float
    r0: float
    slope: float
    first_window: float  # seconds, window starts
    last_window: float
    windows: int = 0
    confidence: float = 0.0
    peers: set[int] = field(default_factory=set)
    changes: dict[_Change, int] = field(default_factory=dict)  # windows per change found
    hits: int = 0
    first_hit: float = np.inf  # recording frames: the earliest anchor on the line
    last_anchor: float = -np.inf
    last_hit: float = -np.inf  # the latest target on the line
    sums: np.ndarray = field(default_factory=lambda: np.zeros(5))  # n, q, r, qq, qr
    # Anchor frames of its hits near its start and its end (_EDGE_S of each; the middle is
    # dropped): where it meets a neighbour, which of them holds the audio.
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    closed: bool = False
    failed: bool = False  # a window disagreed after the last agreement
    continues: bool = False  # the same line as a track that ended just before it
    runs_on: bool = False  # settled as a segment of its own: later hits may extend it

    def line_at(self, q: np.ndarray | float) -> Any:
        n, sq, sr = self.sums[:3]
        dq = q - self.q0
        if n == 0:
            return self.r0 + self.slope * dq
        mq, mr = sq / n, sr / n
        return self.r0 + mr + self.slope * (dq - mq)

    def add(self, q: np.ndarray, r: np.ndarray, fs: float) -> None:
        dq, dr = q - self.q0, r - self.r0
        self.sums += (dq.size, dq.sum(), dr.sum(), (dq * dq).sum(), (dq * dr).sum())
        n, sq, sr, sqq, sqr = self.sums
        var = sqq / n - (sq / n) ** 2
        if n >= _FIT_MIN_HITS and (self.last_anchor - self.first_hit) * fs >= _FIT_SPAN_S:
            slope = (sqr / n - sq * sr / n**2) / var
            if 0.75 < slope < 1.35:
                self.slope = float(slope)

    def evidence_s(self, fs: float, window_s: float) -> float:
        """Seconds its hits run through (its windows', when it has too few hits)."""
        if self.hits < 3:
            return self.last_window - self.first_window + window_s - 2 * _WINDOW_NEEDS_S
        return (self.last_hit - self.first_hit) * fs

    def span(self, fs: float, window_s: float) -> tuple[float, float]:
        """Where its audio is in the recording, in seconds: its first and last hit, at least
        as far as its windows reach (a window matched holds ``_WINDOW_NEEDS_S`` of it: where
        the hits thin out at a quiet end, the windows still say so)."""
        first = self.first_window + window_s - _WINDOW_NEEDS_S
        last = self.last_window + _WINDOW_NEEDS_S
        if self.hits < 3:
            return min(first, last), max(first, last)
        return min(self.first_hit * fs, first), max(self.last_hit * fs, last)


class _HitStream:
    """Every hash of the recording for one change (speed, pitch, tempo undone), computed
    once as the audio arrives,
    and its hits in the index: rows of (anchor frame, target frame, episode, reference
    frame), recording frames counted from the recording's first sample."""

    def __init__(self, seg: Segmenter, change: _Change, start_frame: int) -> None:
        self.seg = seg
        speed, pitch, tempo = change
        self.time_factor = speed * tempo
        self.freq_factor = speed * 2.0 ** (pitch / 12.0)
        self.done = start_frame  # anchors before this frame have been hashed
        self.hits = np.zeros((0, 4), dtype=np.float64)

    def advance(self, *, final: bool) -> np.ndarray:
        """Hash and look up the anchors that became final; returns their hits."""
        seg, p = self.seg, self.seg.params
        hop = p.hop
        end_frame = seg.now // hop
        ready = end_frame if final else end_frame - seg.lookahead_frames
        if ready <= self.done:
            return _NO_HITS
        # Peaks are picked against their neighbours half a second either side: context.
        ctx = seg.context_frames
        first = max(self.done - ctx, -(-seg.buffer_start // hop))
        spec = spectrogram(seg.audio(first * hop, seg.now), params=p)
        peaks = find_peaks(spec, params=p, peaks_per_second=seg.sp.peaks_per_second)
        if not final:
            # Peaks near the end may still change as audio comes: none are targets yet.
            peaks = peaks[peaks["t"] < spec.shape[0] - ctx]
        tf = self.time_factor
        hashes = hash_peaks(
            peaks, params=p, fanout=seg.sp.fanout, time_factor=tf, freq_factor=self.freq_factor
        )
        anchor = hashes.times / tf + first
        keep = (anchor >= self.done) & (anchor < ready)
        self.done = ready
        if not keep.any():
            return _NO_HITS
        keys, anchor = hashes.keys[keep], anchor[keep]
        dt = unpack(keys)[2].astype(np.float64) / tf
        order = np.argsort(keys, kind="stable")
        per_hash = seg.match_params.hits_per_hash
        qi, ep, ref = seg.index.lookup(keys[order], max_hits=per_hash * keys.size)
        qi = order[qi]
        hits = np.column_stack([anchor[qi], anchor[qi] + dt[qi], ep, ref]).astype(np.float64)
        self.hits = np.concatenate([self.hits, hits])
        horizon = ready - seg.history_frames
        if self.hits.size and self.hits[0, 0] < horizon:
            self.hits = self.hits[self.hits[:, 0] >= horizon]
        return hits


_NO_HITS = np.zeros((0, 4), dtype=np.float64)


def _slope(s: Segment) -> float:
    """Episode seconds per recording second along a segment."""
    return s.speed * s.tempo


class Segmenter:
    """Segments a recording fed in chunks; see the module docstring.

    Parameters
    ----------
    index : Searchable
        A snapshot or an in-memory index.
    params : SegmentParams
    match_params : MatchParams
        For the windows' matches.

    Examples
    --------
    >>> seg = Segmenter(snapshot)  # doctest: +SKIP
    >>> for chunk in chunks:  # doctest: +SKIP
    ...     for segment in seg.feed(chunk):
    ...         print(segment.to_dict())
    >>> rest = seg.finish()  # doctest: +SKIP
    >>> seg.result().to_dict("recording.mp3")  # doctest: +SKIP
    """

    def __init__(
        self,
        index: Searchable,
        *,
        params: SegmentParams = DEFAULT_SEGMENT_PARAMS,
        match_params: MatchParams = DEFAULT_MATCH_PARAMS,
    ) -> None:
        self.index = index
        self.params = p = index.params
        self.sp = params
        # Without the spread and room passes: a window the spread pass answers weakly as it
        # straddles an excerpt's end moved that end past 1 s in
        # tests/fingerprint/test_recording.py (their gain is for short clips of a room, which
        # a window followed along a line does not need).
        self.match_params = match_params = replace(match_params, spread_fanout=0, room_fanout=0)
        # The windows between searches: the same passes without the search over changes.
        self.unit_params = replace(
            match_params,
            **{f.name: () for f in fields(match_params) if f.name in _CHANGE_SEARCH},  # type: ignore[arg-type]
        )
        self.rate = p.sample_rate
        self.fs = p.frame_seconds
        self.window = round(params.window_s * self.rate)
        self.history = round(params.history_s * self.rate)
        self.hop = round(params.hop_s * self.rate)
        self.lookahead_frames = round(params.lookahead_s / self.fs)
        self.context_frames = round(0.5 / self.fs) + p.peak_time_radius + 2
        self.history_frames = round(params.history_s / self.fs)
        self._episode_ids = {e.episode_id: i for i, e in enumerate(index.episodes)}
        self._buf = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0  # recording sample of _buf[0]
        self.samples_seen = 0
        # Where the step being run stands: the end of its window. Hits, ends and settling are
        # decided by it, not by how much audio has been fed, so the answer is the same
        # whatever the chunks.
        self.now = 0
        self._next_window = 0  # recording sample where the next window starts
        self._windows_run = 0
        self._streams: dict[_Change, _HitStream] = {}
        self._tracks: list[_Track] = []  # open, or ended and waiting for their group
        self._settled: list[_Track] = []  # settled lately: later windows may still see them
        self._emitted: list[Segment] = []

    # -- input ---------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Seconds of audio fed so far."""
        return self.samples_seen / self.rate

    def held_bytes(self) -> int:
        """Memory of what it keeps behind the newest sample: audio and hits, at most
        ``history_s`` of each, whatever the length of the input."""
        return int(self._buf.nbytes + sum(s.hits.nbytes for s in self._streams.values()))

    def audio(self, start: int, stop: int) -> np.ndarray:
        """Recording samples ``[start, stop)`` still in the buffer (clipped to it)."""
        a = max(start, self.buffer_start) - self.buffer_start
        b = max(min(stop, self.samples_seen) - self.buffer_start, a)
        return self._buf[a:b]

    def feed(self, samples: np.ndarray) -> list[Segment]:
        """Add mono float32 samples at ``index.params.sample_rate``; returns the segments
        they settle (in order), often none."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return []
        self._buf = np.concatenate([self._buf, x])
        self.samples_seen += x.size
        out: list[Segment] = []
        while self._next_window + self.window <= self.samples_seen:
            out += self._step(self._next_window, final=False)
            self._next_window += self.hop
        keep_from = min(self._next_window + self.window, self.samples_seen) - self.history
        if keep_from > self.buffer_start:
            self._buf = self._buf[keep_from - self.buffer_start :]
            self.buffer_start = keep_from
        return out

    def finish(self) -> list[Segment]:
        """The input has ended: settle everything; returns the segments not yet returned."""
        n = self.now = self.samples_seen
        last_end = self._next_window - self.hop + self.window
        if self._windows_run == 0 or last_end < n - self.hop // 2:
            # The tail after the last full window, or a recording shorter than one.
            out = self._step(max(0, n - self.window), final=True)
        else:
            out = self._advance(final=True)
        for t in self._tracks:
            t.closed = True
        return out + self._settle()

    def result(
        self, *, ended: str = "end", reason: str = "", warnings: tuple[str, ...] = ()
    ) -> RecordingResult:
        """Every segment returned so far, as a :class:`RecordingResult`; pieces of one excerpt
        that a lull in its evidence split (one after the other, the same episode on the same
        line) are joined."""
        joined: list[Segment] = []
        emitted = sorted(self._emitted, key=lambda s: s.start_s)
        for i, s in enumerate(emitted):
            t = s._track
            if t is not None:
                # Hits that came on its line after it was returned (a live segment is settled
                # at the first long lull; a noisy end can come back after it).
                end = min(t.span(self.fs, self.sp.window_s)[1], self.duration_s)
                if i + 1 < len(emitted):
                    end = min(end, emitted[i + 1].start_s)
                s = replace(s, end_s=max(s.end_s, end))
            last = joined[-1] if joined else None
            if (
                last is not None
                and not (last.ambiguous or s.ambiguous)
                and last.episode_id == s.episode_id
                and s.start_s - last.end_s <= self.sp.join_gap_s
                and abs(last.offset_s + (s.start_s - last.start_s) * _slope(last) - s.offset_s)
                <= self.sp.line_tolerance_s
            ):
                joined[-1] = replace(
                    last,
                    end_s=max(last.end_s, s.end_s),
                    confidence=max(last.confidence, s.confidence),
                    windows=last.windows + s.windows,
                    hits=last.hits + s.hits,
                )
            else:
                joined.append(s)
        return RecordingResult(
            duration_s=self.duration_s,
            segments=tuple(joined),
            ended=ended,
            reason=reason,
            warnings=warnings,
        )

    # -- one step: a window, the new hits, the tracks that end ---------------------------

    def _step(self, start: int, *, final: bool) -> list[Segment]:
        window = self.audio(start, start + self.window)
        self.now = self.samples_seen if final else start + window.size
        # The whole cascade every search_every windows, and on every window while a changed
        # recording (a track at another speed, pitch or tempo) is being followed.
        search = self._windows_run % self.sp.search_every == 0 or any(
            not t.closed and t.change != _UNCHANGED for t in self._tracks
        )
        self._windows_run += 1
        mp = self.match_params if search else self.unit_params
        result = match_samples(window, self.index, match_params=mp)
        a_s = start / self.rate
        centre = (start + window.size / 2) / self.params.hop  # recording frames
        agreed: set[int] = set()
        episodes = [self._episode_ids[m.episode_id] for m in result.matches]
        for m, e in zip(result.matches, episodes, strict=True):
            if m.offset_s <= 0.0:
                continue  # clamped at the episode's start: the line is unknown
            # The episode frame at the window's centre, by this window.
            change = (m.speed, m.pitch, m.tempo)
            slope = m.speed * m.tempo
            r = m.offset_s / self.fs + slope * (centre - start / self.params.hop)
            track, continues = self._find(e, centre, r, a_s)
            if track is None:
                track = self._open(e, change, centre, r, a_s)
                track.continues = continues
            track.last_window = max(track.last_window, a_s)
            track.windows += 1
            if search:  # only a window that searched could have found another change
                track.changes[change] = track.changes.get(change, 0) + 1
                self._rehash(track)
            track.failed = False
            track.confidence = max(track.confidence, m.confidence)
            if result.ambiguous:
                track.peers.update(x for x in episodes if x != e)
            agreed.add(id(track))
        for t in self._tracks:
            if not t.closed and id(t) not in agreed:
                t.failed = True
        return self._advance(final=final)

    def _find(self, episode: int, q: float, r: float, a_s: float) -> tuple[_Track | None, bool]:
        """The open track this window's match agrees with (or an ended one it is the tail
        of), and whether it continues one that ended lately (a lull split the excerpt)."""
        tol = self.sp.line_tolerance_s / self.fs
        continues = False
        for t in self._tracks + self._settled:
            if t.episode != episode or abs(t.line_at(q) - r) > tol:
                continue
            end = t.span(self.fs, self.sp.window_s)[1]
            # A window that still overlaps an ended track by a second is its tail (a window
            # matches on about that much), not a new excerpt on the same line.
            if not t.closed or end >= a_s + 1.0:
                return t, False
            continues = continues or a_s + self.sp.window_s - end <= self.sp.join_gap_s
        return None, continues

    def _open(self, episode: int, change: _Change, q: float, r: float, a_s: float) -> _Track:
        slope = change[0] * change[2]
        t = _Track(episode, change, q, r, slope, first_window=a_s, last_window=a_s)
        self._backfill(t, self._on_line(t, self._stream(change).hits), a_s)
        self._tracks.append(t)
        return t

    def _backfill(self, t: _Track, h: np.ndarray, until_s: float) -> None:
        """Take the hits already seen on a line that lead up to ``until_s``: where its
        excerpt started. Only the run of them that reaches it: hits further back, across a
        gap, are chance."""
        if h.size == 0:
            return
        h = h[np.argsort(h[:, 0])]
        breaks = np.flatnonzero(np.diff(h[:, 0]) * self.fs > self.sp.max_gap_s)
        if breaks.size:
            h = h[breaks[-1] + 1 :]
        if h[-1, 0] * self.fs >= until_s - self.sp.max_gap_s:
            self._take(t, h)

    def _stream(self, change: _Change) -> _HitStream:
        stream = self._streams.get(change)
        if stream is None:
            start = -(-max(self.buffer_start, self.now - self.history) // self.params.hop)
            stream = self._streams[change] = _HitStream(self, change, start)
            stream.advance(final=False)
        return stream

    def _rehash(self, t: _Track) -> None:
        """Hash a track's hits for the change most of its searching windows found (the
        first window's can be a neighbouring speed): from where its hits so far end, and
        the run of them that leads up to where they start."""
        if not t.changes:
            return
        change = max(t.changes, key=lambda c: (t.changes[c], c == _UNCHANGED))
        if change == t.change:
            return
        t.change = change
        h = self._on_line(t, self._stream(change).hits)
        if h.size == 0:
            return
        first = t.first_hit if t.hits else np.inf
        later = h[h[:, 0] > t.last_anchor]
        if later.size:
            self._take(t, later)
        if np.isfinite(first):
            self._backfill(t, h[h[:, 0] < first], first * self.fs)

    def _on_line(self, t: _Track, hits: np.ndarray) -> np.ndarray:
        if hits.size == 0:
            return hits
        h = hits[hits[:, 2] == t.episode]
        if h.size == 0:
            return h
        return h[np.abs(h[:, 3] - t.line_at(h[:, 0])) <= self.sp.tolerance]

    def _take(self, t: _Track, h: np.ndarray) -> None:
        t.hits += int(h.shape[0])
        t.first_hit = min(t.first_hit, float(h[:, 0].min()))
        t.last_anchor = max(t.last_anchor, float(h[:, 0].max()))
        t.last_hit = max(t.last_hit, float(h[:, 1].max()))
        t.add(h[:, 0], h[:, 3], self.fs)
        edge = _EDGE_S / self.fs
        times = np.concatenate([t.times, h[:, 0]])
        t.times = times[(times < t.first_hit + edge) | (times > t.last_anchor - edge)]

    def _advance(self, *, final: bool) -> list[Segment]:
        for change, stream in self._streams.items():
            new = stream.advance(final=final)
            for t in self._tracks:
                if not t.closed and t.change == change:
                    h = self._on_line(t, new)
                    if h.size:
                        self._take(t, h)
            for t in self._settled:
                if t.runs_on and t.change == change:
                    self._run_on(t, self._on_line(t, new))
        # A track ends when a window has disagreed since its last agreement and its line
        # has gone a gap without a hit.
        for t in self._tracks:
            if t.closed or not t.failed:
                continue
            horizon = self._streams[t.change].done * self.fs
            end = t.span(self.fs, self.sp.window_s)[1]
            if final or horizon - end >= self._gap(t):
                t.closed = True
        return self._settle()

    def _run_on(self, t: _Track, h: np.ndarray) -> None:
        """Hits on a settled track's line that continue it without a long gap extend it (for
        the final answer); the first long gap ends that."""
        if h.size == 0:
            return
        h = h[np.argsort(h[:, 0])]
        gaps = np.diff(np.concatenate(([t.last_hit], h[:, 0]))) * self.fs
        broken = np.flatnonzero(gaps > self.sp.max_gap_s)
        if broken.size:
            t.runs_on = False
            h = h[: broken[0]]
        if h.size:
            self._take(t, h)

    def _gap(self, t: _Track) -> float:
        sp = self.sp
        if t.hits < _FIT_MIN_HITS * 2:
            return sp.max_gap_s  # too few hits to judge their spacing by
        spacing = (t.last_anchor - t.first_hit) * self.fs / (t.hits - 1)
        return float(np.clip(sp.gap_hits * spacing, sp.min_gap_s, sp.max_gap_s))

    # -- settling: tracks to segments ----------------------------------------------------

    def _settle(self) -> list[Segment]:
        """Segments of the groups whose tracks have all ended. A group: tracks that shared
        windows (an intro's episodes), or overlap by more than a second, transitively."""
        tracks = self._tracks
        if not any(t.closed for t in tracks):
            return []
        spans = [t.span(self.fs, self.sp.window_s) for t in tracks]
        parent = list(range(len(tracks)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, a in enumerate(tracks):
            for j in range(i):
                b = tracks[j]
                overlap = min(spans[i][1], spans[j][1]) - max(spans[i][0], spans[j][0])
                shared = b.episode in a.peers or a.episode in b.peers
                # Mostly inside one another: a repeat or chance, decided when both have
                # ended. Overlapping at the edges (one excerpt after another, a boundary
                # blurred by chance hits) is settled track by track, cut between them.
                shorter = min(spans[i][1] - spans[i][0], spans[j][1] - spans[j][0])
                if (shared and overlap > 0) or overlap > max(1.0, 0.5 * shorter):
                    parent[root(i)] = root(j)
        groups: dict[int, list[int]] = {}
        for i in range(len(tracks)):
            groups.setdefault(root(i), []).append(i)
        out: list[Segment] = []
        settled: set[int] = set()
        for members in groups.values():
            if all(tracks[i].closed for i in members):
                settled.update(members)
                group = [tracks[i] for i in members]
                out += [self._cut_at_neighbours(s, group) for s in self._segments_of(group)]
        self._tracks = [t for i, t in enumerate(tracks) if i not in settled]
        horizon = (self.now - self.history) / self.rate
        self._settled = [
            t for t in self._settled if t.span(self.fs, self.sp.window_s)[1] >= horizon
        ] + [t for i, t in enumerate(tracks) if i in settled]
        out = self._trim(sorted(out, key=lambda s: s.start_s))
        self._emitted += out
        return out

    def _cut_at_neighbours(self, s: Segment, group: list[_Track]) -> Segment:
        """A segment of one episode cut where it meets an overlapping track outside its
        group (open, or lately settled; not one it shares audio with): at the instant that
        leaves the most hits of each on its own side."""
        mine = s._track
        if mine is None:
            return s
        for other in self._tracks + self._settled:
            if other in group or other.hits < 3:
                continue
            if other.episode in mine.peers or mine.episode in other.peers:
                continue
            a0, a1 = s.start_s, s.end_s
            b0, b1 = other.span(self.fs, self.sp.window_s)
            if min(a1, b1) <= max(a0, b0) or (b0 <= a0 and b1 >= a1):
                continue
            if b0 > a0:  # it starts inside this one's end
                cut = _cut_point(mine.times * self.fs, other.times * self.fs, b0, a1)
                s = _cut(s, end=max(cut, a0))
            elif b1 < a1:  # it ends inside this one's start
                cut = _cut_point(other.times * self.fs, mine.times * self.fs, a0, b1)
                s = _cut(s, start=min(cut, a1))
        return s

    def _segments_of(self, members: list[_Track]) -> list[Segment]:
        sp, fs = self.sp, self.fs
        # A recording no longer than a window is matched whole, as a clip.
        whole = self._windows_run <= 1
        real = [
            t
            for t in members
            # The rest of an excerpt a lull split needs no more evidence than a window's.
            if whole
            or t.continues
            or (t.windows >= sp.min_windows and t.evidence_s(fs, sp.window_s) >= sp.min_span_s)
        ]
        spans = {id(t): t.span(fs, sp.window_s) for t in real}

        def shares(a: _Track, b: _Track) -> bool:
            return a is not b and (a.episode in b.peers or b.episode in a.peers)

        def own_s(t: _Track) -> float:
            others = [spans[id(u)] for u in real if shares(t, u)]
            if not others:
                return np.inf
            start, end = spans[id(t)]
            return max(end - max(e for _, e in others), min(s for s, _ in others) - start)

        # Audio of one episode: a track with no peers, or one that runs on past them (its
        # peers are the part it shares, an intro the recording runs on from).
        own = [t for t in real if own_s(t) >= sp.own_s]
        shared = [t for t in real if t not in own and not any(shares(t, o) for o in own)]
        out: list[Segment] = []
        # Where two overlap, the one with more hits keeps the overlap; shared audio yields
        # to an episode's own.
        for t in sorted(own, key=lambda t: (-t.hits, -t.windows)):
            seg = _clear(self._segment([t], ambiguous=False), out)
            if seg is not None:
                t.runs_on = True
                out.append(replace(seg, _track=t))
        if shared:
            # Shared audio: every episode it is in, the best supported first.
            shared.sort(key=lambda t: (-t.windows, -t.hits, -t.confidence))
            seg = _clear(self._segment(shared, ambiguous=len(shared) > 1), out)
            if seg is not None:
                out.append(seg)
        return out

    def _trim(self, segments: list[Segment]) -> list[Segment]:
        """New segments start no earlier than the last one returned ends (by less than a
        second, boundaries estimated either side of one cut)."""
        out = []
        last = self._emitted[-1].end_s if self._emitted else 0.0
        for s in segments:
            if s.start_s < last:
                s = _cut(s, start=last)
            if s.end_s > s.start_s:
                out.append(s)
                last = max(last, s.end_s)
        return out

    def _segment(self, members: list[_Track], *, ambiguous: bool) -> Segment:
        spans = [t.span(self.fs, self.sp.window_s) for t in members]
        start = max(0.0, min(s for s, _ in spans))
        end = min(max(e for _, e in spans), self.duration_s)
        matches = tuple(self._match(t, start) for t in members)
        best = members[0]
        e = self.index.episodes[best.episode]
        return Segment(
            episode_id=e.episode_id,
            source=e.source,
            season=e.season,
            start_s=start,
            end_s=max(end, start),
            offset_s=matches[0].offset_s,
            confidence=best.confidence,
            # The fitted slope is the time factor; the change found says how it splits.
            speed=best.slope / best.change[2],
            pitch=best.change[1],
            tempo=best.change[2],
            ambiguous=ambiguous,
            matches=matches,
            windows=best.windows,
            hits=best.hits,
        )

    def _match(self, t: _Track, start_s: float) -> SegmentMatch:
        e = self.index.episodes[t.episode]
        return SegmentMatch(
            episode_id=e.episode_id,
            source=e.source,
            season=e.season,
            offset_s=max(0.0, float(t.line_at(start_s / self.fs)) * self.fs),
            confidence=t.confidence,
        )


def _cut_point(before: np.ndarray, after: np.ndarray, lo: float, hi: float) -> float:
    """Where in ``[lo, hi]`` audio of one track gives way to the next: the instant with the
    most of ``before``'s hit times ahead of it and of ``after``'s behind it (seconds)."""
    a = np.sort(before[(before >= lo) & (before <= hi)])
    b = np.sort(after[(after >= lo) & (after <= hi)])
    candidates = np.unique(np.concatenate(([lo, hi], a, b)))
    score = np.searchsorted(a, candidates, side="left") + (
        b.size - np.searchsorted(b, candidates, side="left")
    )
    best = np.flatnonzero(score == score.max())
    # Among equal instants, the middle of the stretch they span.
    return float((candidates[best[0]] + candidates[best[-1]]) / 2)


def _clear(s: Segment, stronger: list[Segment]) -> Segment | None:
    """``s`` cut back to where none of ``stronger`` is; None when it lies inside one or
    around one (a repeat of its audio, or chance)."""
    for k in stronger:
        if min(s.end_s, k.end_s) <= max(s.start_s, k.start_s):
            continue
        if s.start_s >= k.start_s and s.end_s <= k.end_s:
            return None
        if s.start_s < k.start_s and s.end_s > k.end_s:
            return None
        s = _cut(s, start=k.end_s) if s.start_s >= k.start_s else _cut(s, end=k.start_s)
    return s


def _cut(s: Segment, *, start: float | None = None, end: float | None = None) -> Segment:
    """``s`` with a boundary moved (the offset follows the start along its line)."""
    if start is not None:
        s = replace(s, start_s=start, offset_s=s.offset_s + (start - s.start_s) * _slope(s))
        s = replace(s, matches=tuple(replace(m, offset_s=s.offset_s) for m in s.matches[:1]))
    if end is not None:
        s = replace(s, end_s=end)
    return s


def segment_samples(
    samples: np.ndarray | Iterable[np.ndarray],
    index: Searchable,
    *,
    params: SegmentParams = DEFAULT_SEGMENT_PARAMS,
    match_params: MatchParams = DEFAULT_MATCH_PARAMS,
) -> RecordingResult:
    """Segments of a whole recording (an array, or chunks of one).

    Parameters
    ----------
    samples : np.ndarray, shape (n,), float32, or an iterable of such chunks
        Mono audio at ``index.params.sample_rate``.

    Returns
    -------
    RecordingResult
    """
    seg = Segmenter(index, params=params, match_params=match_params)
    chunks: Iterable[np.ndarray]
    if isinstance(samples, np.ndarray):
        step = 10 * seg.rate
        chunks = (samples[i : i + step] for i in range(0, samples.size, step))
    else:
        chunks = samples
    for chunk in chunks:
        seg.feed(chunk)
    seg.finish()
    return seg.result()
