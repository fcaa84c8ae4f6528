"""Identify a clip by what is said: transcribe it, find its words in the snapshot's transcripts.

For clips the fingerprint cannot place because their music is not the library's (a streaming
version whose music licences ran out, a dubbed or re-mixed upload) while their dialogue is.

1. The clip is transcribed with the packaged model (:mod:`.transcriber`; its silero VAD drops
   music, so a clip without speech has no words and is answered "no speech in the clip").
2. Candidates: each of the clip's transcript segments, and its whole text, is a BM25 query
   over the segments' words (:meth:`.SegmentSearcher.search_words`: no embedding model).
3. Alignment: around each candidate segment, the episode's segments are laid out as one word
   sequence, each word timed by where it sits in its segment's text (characters from the
   segment's start to its end: the snapshot keeps segment times, not word times). The clip's
   words (timed by the transcriber) and the episode's, each joined by spaces, are aligned
   letter by letter in order (:class:`difflib.SequenceMatcher`): the tiny model spells the
   same speech differently in a clip and in the whole episode ("leather" for "letter", "car
   a bit" for "carpet"), and runs of agreeing letters still find it where whole words do not.
   An episode word covered for at least half its letters is matched, to the clip word its
   first covered letter lies in; each pair says where the clip starts in the episode (the
   episode word's time minus the clip word's). The pairs that agree within
   :data:`OFFSET_TOLERANCE_S` of each other are the evidence, and their median the offset.
4. Evidence is weighed by what chance cannot easily give. A matched word counts its share of
   letters covered times how rare it is: in the library's segments (``-log`` of the share of
   segments holding it) or, when the episode's word before it is matched too, *after that
   word* (``-log`` of the share of the segments holding the one that also hold the other): a
   phrase every episode says ("I think we should", "if it rains") is nearly certain word
   after word and weighs little, however long; a name next to an odd noun weighs a lot.
   The weight of every segment of the episode after the best one counts
   ``1 + more_rows`` times (chance agrees within one line, a clip of the episode across
   several lines), each clip word left unmatched costs ``unmatched``, and every clip word
   ``per_word``: the evidence unseen speech reaches by chance grows with the words a clip
   says (on the calibration draw, whole-word evidence up to 13.0 for 10 s clips, 10.2 for
   5 s ones), so a clip needs more the more it says. That is the answer's ``score`` (rounded).
5. ``confidence = 1 / (1 + exp(-(score - centre) / scale))``, 0.9 (the audio path's threshold)
   at evidence 8.0, above the 7.5 the 240 calibration clips of unseen speech reached
   (``benchmarks/words.py``: clips of held-out episodes in the library's own vocabulary and
   sentence templates, and of speech in other words, 5 s and 10 s). Below it, no match.
   The benchmark scores the previous alignment (whole words) beside this one from a checkout
   of the commit before it (``benchmarks/words.py --previous``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..fingerprint.records import Match, MatchResult
from ..snapshot.segments import ShardSegments, words_of
from .records import Transcript
from .search import SegmentSearcher
from .transcriber import SAMPLE_RATE, Transcriber, load_transcriber

if TYPE_CHECKING:
    from ..snapshot.directory import Snapshot

__all__ = [
    "MAX_WORDS_S",
    "NO_SPEECH",
    "NO_TRANSCRIPTS",
    "WordsIdentifier",
    "WordsParams",
    "identify_by_words",
    "identify_transcript",
]

NO_SPEECH = "no speech in the clip"
"""The note of an answer for a clip the transcriber found no words in."""
NO_TRANSCRIPTS = "the snapshot holds no transcripts (built with --fingerprints-only?)"
MAX_WORDS_S = 30.0
"""Seconds of a clip (its first) transcribed to identify it: enough words to be sure, and a
long upload costs no more than this (tiny.en on the CPU: about a quarter of real time)."""

# Matched words whose implied offsets agree within this many seconds are one alignment: the
# episode's word times are interpolated inside segments of a few seconds.
OFFSET_TOLERANCE_S = 1.5


@dataclass(frozen=True, kw_only=True)
class WordsParams:
    """How a clip is matched by its words (see the module docstring).

    Attributes
    ----------
    candidates : int
        Segments each BM25 query brings in as candidates.
    context_s : float
        Seconds of the episode's segments laid out on each side of a candidate.
    surprisal : bool
        Weigh a matched word by how rare it is (after the episode's word before it when that
        one is matched too, else alone); else each word alike.
    tolerance_s : float
        Matched words whose offsets agree within this many seconds are one alignment.
    more_rows, unmatched : float
        The extra weight of the episode's segments after the best one, and the cost of each
        unmatched clip word.
    centre, scale : float
        The logistic mapping ``score`` to ``confidence``.
    min_confidence : float
        Answers below it are not answers (the audio path's threshold).
    max_words : int
        The clip's words beyond this many are left out (a long clip says plenty before).
    min_letters : int
        Letters (spaces between words included) a run of agreeing letters needs to count.
    min_cover : float
        The share of an episode's word a run must cover for the word to count, in proportion.
    per_word : float
        What each of the clip's words costs, matched or not: chance agreement grows with the
        words a clip says, so the evidence a clip needs grows with them too.
    """

    candidates: int = 8
    context_s: float = 20.0
    surprisal: bool = True
    tolerance_s: float = OFFSET_TOLERANCE_S
    more_rows: float = 0.5
    unmatched: float = 0.3
    centre: float = 4.7
    scale: float = 1.5
    min_confidence: float = 0.9
    max_words: int = 200
    min_letters: int = 4
    min_cover: float = 0.5
    per_word: float = 0.35


DEFAULT_WORDS_PARAMS = WordsParams()


@dataclass(frozen=True)
class _ClipWords:
    tokens: list[str]
    times: np.ndarray  # (n,) float64 seconds from the clip's first sample


@dataclass
class _Candidate:
    part: int
    episode: int  # index in the part's shard
    score: float
    offset_s: float
    n_words: int
    # The agreeing weight in each of the episode's segments, largest first.
    row_weights: tuple[float, ...] = ()
    evidence: float = 0.0


def identify_by_words(
    samples: np.ndarray,
    searcher: SegmentSearcher,
    transcriber: Transcriber,
    *,
    label: str = "clip",
    params: WordsParams = DEFAULT_WORDS_PARAMS,
) -> MatchResult:
    """Where mono speech lies in the snapshot's transcripts.

    Parameters
    ----------
    samples : np.ndarray, shape (n,), float
        The clip at :data:`~.transcriber.SAMPLE_RATE` (16 kHz, the transcriber's rate; not the
        fingerprint's).
    searcher : SegmentSearcher
        Over the snapshot's segments (no embedding model is needed).
    transcriber : Transcriber
        The model the snapshot's transcripts were made with, ideally.
    label : str
        Names the clip in errors.

    Returns
    -------
    MatchResult
        ``method="words"``; matches best first, each ``offset_s`` where the clip's first sample
        lies in the episode; none when nothing is said (``note`` :data:`NO_SPEECH`) or what is
        said is not in the library.
    """
    transcript = transcriber.transcribe(samples, label=label)
    return identify_transcript(transcript, searcher, params=params)


def identify_transcript(
    transcript: Transcript,
    searcher: SegmentSearcher,
    *,
    params: WordsParams = DEFAULT_WORDS_PARAMS,
) -> MatchResult:
    """:func:`identify_by_words` for a clip already transcribed (times from its first sample)."""
    clip = _clip_words(transcript, params.max_words)
    if not clip.tokens:
        return MatchResult(
            matches=(), ambiguous=False, query_hashes=0, method="words", note=NO_SPEECH
        )
    candidates = _score_candidates(clip, transcript, searcher, params)
    matches = []
    for c in candidates:
        confidence = _confidence(c.evidence, params)
        if confidence < params.min_confidence:
            continue
        shard, _ = searcher.part(c.part)
        episode = shard.episodes[c.episode]
        matches.append(
            Match(
                episode_id=episode.episode_id,
                source=episode.source,
                season=shard.season,
                offset_s=max(c.offset_s, 0.0),
                score=round(c.evidence),
                confidence=confidence,
            )
        )
    # Several episodes saying the same words (a repeat, a recap) are reported together.
    ambiguous = len(matches) > 1 and matches[1].score >= 0.8 * matches[0].score
    return MatchResult(
        matches=tuple(matches[: 5 if ambiguous else 1]),
        ambiguous=ambiguous,
        query_hashes=len(clip.tokens),
        passes=("words",),
        method="words",
    )


def _confidence(score: float, params: WordsParams) -> float:
    return 1.0 / (1.0 + math.exp(min(700.0, -(score - params.centre) / params.scale)))


def _clip_words(transcript: Transcript, max_words: int) -> _ClipWords:
    """The clip's words as the word index knows them (lower-cased ``\\w+`` runs), each timed
    at its start ("don't" is two tokens at the same time)."""
    tokens: list[str] = []
    times: list[float] = []
    for segment in transcript.segments:
        words = segment.words
        if words:
            for w in words:
                for token in words_of(w.text):
                    tokens.append(token)
                    times.append(w.start)
        else:  # a backend without word times: spread the segment's words over it
            toks, ts = _spread(segment.text, segment.start, segment.end)
            tokens += toks
            times += list(ts)
    return _ClipWords(
        tokens[:max_words],
        np.asarray(times[:max_words], dtype=np.float64),
    )


def _spread(text: str, start: float, end: float) -> tuple[list[str], np.ndarray]:
    """The words of a segment, each timed by where its first character sits in the text
    between the segment's start and end."""
    lowered = text.lower()
    tokens, positions = [], []
    pos = 0
    for token in words_of(text):
        at = lowered.find(token, pos)
        at = pos if at < 0 else at
        tokens.append(token)
        positions.append(at)
        pos = at + len(token)
    n = max(len(lowered), 1)
    times = start + (end - start) * np.asarray(positions, dtype=np.float64) / n
    return tokens, times


def _score_candidates(
    clip: _ClipWords, transcript: Transcript, searcher: SegmentSearcher, params: WordsParams
) -> list[_Candidate]:
    queries = [s.text for s in transcript.segments if words_of(s.text)]
    if len(queries) > 1:
        queries.append(" ".join(queries))
    seeds: dict[tuple[int, int], list[int]] = {}  # (part, episode) -> candidate rows
    for query in queries:
        for part, row, _ in searcher.search_words(query[:1000], limit=params.candidates):
            _, seg = searcher.part(part)
            seeds.setdefault((part, int(seg.episode[row])), []).append(row)
    surprisal = _Surprisal(searcher, clip.tokens)
    duration = float(clip.times[-1]) if len(clip.times) else 0.0
    best: dict[tuple[int, int], _Candidate] = {}
    for (part, episode), rows in seeds.items():
        _, seg = searcher.part(part)
        ep_rows = seg.rows_of_episode(episode)
        starts = seg.times[ep_rows, 0]
        # One window per stretch of the episode the candidates point at.
        centres = sorted(float(seg.times[r, 0]) for r in set(rows))
        windows: list[tuple[float, float]] = []
        for t in centres:
            lo, hi = t - duration - params.context_s, t + duration + params.context_s
            if windows and lo <= windows[-1][1]:
                windows[-1] = (windows[-1][0], hi)
            else:
                windows.append((lo, hi))
        for lo, hi in windows:
            chosen = ep_rows[(starts >= lo) & (starts <= hi)]
            cand = _align(clip, surprisal, seg, chosen, params)
            if cand is None:
                continue
            cand.part, cand.episode = part, episode
            if (part, episode) not in best or cand.evidence > best[(part, episode)].evidence:
                best[(part, episode)] = cand
    return sorted(best.values(), key=lambda c: (-c.evidence, c.part, c.episode))


class _Surprisal:
    """How unlikely a word is in a segment of the library (:meth:`alone_of`: ``-log`` of the
    share of segments holding it), and how unlikely after the word before it (:meth:`after`:
    ``-log`` of the share of the segments holding the word before that hold it too). Natural
    logs; the clip's words are looked up at once, others when first asked.

    The second is what makes chance agreement cheap: a phrase every episode says ("I think we
    should", "if it rains") is a run of words that always come together, each nearly certain
    after the one before, and weighs little however long it is."""

    def __init__(self, searcher: SegmentSearcher, tokens: Sequence[str]) -> None:
        self.n = max(searcher.n_segments, 1)
        parts = searcher.parts()
        self._parts = parts
        self.rows = {t: [seg.rows_with_word(t) for _, seg in parts] for t in set(tokens)}
        self.df = {t: sum(len(r) for r in per) for t, per in self.rows.items()}
        self._after: dict[tuple[str, str], float] = {}

    def alone_of(self, token: str) -> float:
        """``-log`` of the share of segments holding ``token`` (any word of the library)."""
        self._ensure(token)
        return -math.log((self.df[token] + 0.5) / (self.n + 1.0))

    def _ensure(self, token: str) -> None:
        if token not in self.rows:
            self.rows[token] = [seg.rows_with_word(token) for _, seg in self._parts]
            self.df[token] = sum(len(r) for r in self.rows[token])

    def after(self, a: str, b: str) -> float:
        """``-log`` of the share of the segments holding ``a`` that hold ``b`` too."""
        if (a, b) not in self._after:
            self._ensure(a)
            self._ensure(b)
            together = sum(
                len(np.intersect1d(x, y, assume_unique=True))
                for x, y in zip(self.rows[a], self.rows[b], strict=True)
            )
            self._after[(a, b)] = max(0.0, -math.log((together + 0.5) / (self.df[a] + 1.0)))
        return self._after[(a, b)]


def _align(
    clip: _ClipWords,
    surprisal: _Surprisal,
    seg: ShardSegments,
    rows: np.ndarray,
    params: WordsParams,
) -> _Candidate | None:
    """The best-supported offset of the clip in these (time-ordered) rows of one episode."""
    lib_tokens: list[str] = []
    lib_times: list[float] = []
    lib_rows: list[int] = []
    for r in rows:
        toks, ts = _spread(seg.text(int(r)), float(seg.times[r, 0]), float(seg.times[r, 1]))
        lib_tokens += toks
        lib_times += list(ts)
        lib_rows += [int(r)] * len(toks)
    if not lib_tokens:
        return None
    return _align_letters(clip, surprisal, lib_tokens, lib_times, lib_rows, params)


def _joined(tokens: Sequence[str]) -> tuple[str, np.ndarray]:
    """The tokens joined by spaces, and which token each character belongs to (a space the
    word before it)."""
    text = " ".join(tokens)
    owner = np.zeros(len(text) + 1, np.int64)
    at = 0
    for k, t in enumerate(tokens):
        owner[at : at + len(t) + 1] = k
        at += len(t) + 1
    return text, owner[: len(text)]


def _align_letters(
    clip: _ClipWords,
    surprisal: _Surprisal,
    lib_tokens: list[str],
    lib_times: list[float],
    lib_rows: list[int],
    params: WordsParams,
) -> _Candidate | None:
    """:func:`_align` letter by letter. The clip's words and the episode's, each joined by
    spaces, are aligned in order (:class:`difflib.SequenceMatcher`); runs of at least
    ``params.min_letters`` agreeing letters count. An episode's word they cover for at least
    ``params.min_cover`` of its letters is matched, to the clip's word its first covered letter
    falls in, and weighs its share of letters covered times how rare it is (after the
    episode's word before it when that one is matched too, else alone)."""
    cs, c_owner = _joined(clip.tokens)
    ls, l_owner = _joined(lib_tokens)
    matcher = difflib.SequenceMatcher(None, cs, ls, autojunk=False)
    covered = np.zeros(len(lib_tokens))
    clip_of = np.full(len(lib_tokens), -1, np.int64)
    for block in matcher.get_matching_blocks():
        if block.size < params.min_letters:
            continue
        for k in range(block.size):
            if ls[block.b + k] == " ":
                continue
            j = int(l_owner[block.b + k])
            covered[j] += 1
            if clip_of[j] < 0:
                clip_of[j] = int(c_owner[block.a + k])
    share = np.minimum(covered / np.array([len(t) for t in lib_tokens], dtype=np.float64), 1.0)
    good = share >= params.min_cover
    cj = np.flatnonzero(good)
    if not len(cj):
        return None
    weights = []
    for j in cj.tolist():
        if not params.surprisal:
            rarity = 1.0
        elif j > 0 and good[j - 1] and clip_of[j - 1] <= clip_of[j]:
            rarity = surprisal.after(lib_tokens[j - 1], lib_tokens[j])
        else:
            rarity = surprisal.alone_of(lib_tokens[j])
        weights.append(float(share[j]) * rarity)
    ci = clip_of[cj]
    offsets = np.asarray(lib_times)[cj] - clip.times[ci]
    w = np.asarray(weights)
    order = np.argsort(offsets, kind="stable")
    offsets, w, cj, ci = offsets[order], w[order], cj[order], ci[order]
    # The window of tolerance_s holding the most weight.
    cum = np.concatenate([[0.0], np.cumsum(w)])
    hi = np.searchsorted(offsets, offsets + params.tolerance_s, side="right")
    lo_idx = int(np.argmax(cum[hi] - cum[np.arange(len(offsets))]))
    hi_idx = int(hi[lo_idx])
    per_row: dict[int, float] = {}
    for j, weight in zip(cj[lo_idx:hi_idx].tolist(), w[lo_idx:hi_idx].tolist(), strict=True):
        per_row[lib_rows[j]] = per_row.get(lib_rows[j], 0.0) + weight
    cand = _Candidate(
        part=-1,
        episode=-1,
        score=float(cum[hi_idx] - cum[lo_idx]),
        offset_s=float(np.median(offsets[lo_idx:hi_idx])),
        n_words=len(set(ci[lo_idx:hi_idx].tolist())),  # the clip's words matched
        row_weights=tuple(sorted(per_row.values(), reverse=True)),
    )
    cand.evidence = _evidence(cand, len(clip.tokens), params)
    return cand


def _evidence(cand: _Candidate, n_tokens: int, params: WordsParams) -> float:
    """What the alignment weighs against chance: its agreeing weight, the segments after the
    first counting ``1 + params.more_rows`` times theirs (chance agrees within one line, a
    clip of the episode across several), less ``params.unmatched`` for each of the clip's
    words left out and ``params.per_word`` for each of its words."""
    rows = cand.row_weights
    more = sum(rows[1:]) if len(rows) > 1 else 0.0
    return (
        (rows[0] if rows else 0.0)
        + (1.0 + params.more_rows) * more
        - params.unmatched * (n_tokens - cand.n_words)
        - params.per_word * n_tokens
    )


class WordsIdentifier:
    """Clips identified by words over one open snapshot: the searcher is built once (no
    model), the transcriber loaded at the first clip (once per process, :func:`load_transcriber`).

    Parameters
    ----------
    snapshot : Snapshot
        Kept open by the caller for the identifier's lifetime.
    transcriber : Transcriber, optional
        Default: the packaged model (``load_transcriber()``), the one ``citywok index`` uses.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        transcriber: Transcriber | None = None,
        params: WordsParams = DEFAULT_WORDS_PARAMS,
    ) -> None:
        self.searcher = SegmentSearcher(snapshot)
        self.params = params
        self._transcriber = transcriber

    @property
    def has_transcripts(self) -> bool:
        return self.searcher.n_segments > 0

    @property
    def transcriber(self) -> Transcriber:
        if self._transcriber is None:
            self._transcriber = load_transcriber()
        return self._transcriber

    def identify(self, samples: np.ndarray, *, label: str = "clip") -> MatchResult:
        """:func:`identify_by_words` of a clip at 16 kHz (at most its first
        :data:`MAX_WORDS_S` seconds are transcribed); a snapshot without transcripts answers
        no match, with a note saying so."""
        if not self.has_transcripts:
            return MatchResult(
                matches=(), ambiguous=False, query_hashes=0, method="words", note=NO_TRANSCRIPTS
            )
        clip = np.asarray(samples)[: round(MAX_WORDS_S * SAMPLE_RATE)]
        return identify_by_words(
            clip, self.searcher, self.transcriber, label=label, params=self.params
        )
