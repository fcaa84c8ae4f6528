"""Frozen records at the core's API edges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One indexed video or episode.

    Attributes
    ----------
    episode_id : str
        Stable, URL-safe key (``showa-s01e03``, ``yt-<videoId>``); also the Dagster partition.
    season : str
        Season id (``showa-s01``); one shard per season.
    show : str
    season_number, episode_number : int or None
    source : str
        Path of the media file relative to the media root (or a URL).
    title : str
    duration_s : float
    sha256 : str
        Of the media file's bytes.
    size, mtime_ns : int
        Of the media file when it was indexed; together with ``source`` they decide whether a
        re-run must decode the file again.
    n_hashes : int
    """

    episode_id: str
    season: str
    show: str = ""
    season_number: int | None = None
    episode_number: int | None = None
    source: str = ""
    title: str = ""
    duration_s: float = 0.0
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0
    n_hashes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class Match:
    """Where a clip lies in one episode.

    ``offset_s`` is where the clip's first sample lies in the episode, in the episode's time;
    ``score`` counts the clip's instants that line up at that offset; ``confidence`` estimates
    the probability that the alignment is not chance.

    How the clip was changed from the episode: ``speed`` is a playback speed-up with the pitch
    following (resampled: 1.0417 for a PAL broadcast of film-rate material), ``pitch`` a pitch
    shift in semitones at the same tempo, and ``tempo`` a time stretch at the same pitch (1.25
    for a clip played at 1.25x). Frequencies in the clip are ``speed * 2 ** (pitch / 12)``
    times the episode's, and it plays ``speed * tempo`` times as fast.
    """

    episode_id: str
    source: str
    season: str
    offset_s: float
    score: int
    confidence: float
    speed: float = 1.0
    pitch: float = 0.0
    tempo: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "source": self.source,
            "season": self.season,
            "offset_s": round(self.offset_s, 2),
            "score": self.score,
            "confidence": round(self.confidence, 3),
            "speed": round(self.speed, 4),
            "pitch": round(self.pitch, 2),
            "tempo": round(self.tempo, 4),
        }


@dataclass(frozen=True, kw_only=True)
class MatchResult:
    """The answer for one clip: matches best first (empty when not in the library).

    ``query_hashes`` is the most hashes one pass formed; ``passes`` names the passes that ran,
    in order (``quick``, ``whole``, ``dense``, then ``speed``, ``pitch`` and ``tempo`` passes
    with their factor, such as ``speed x1.04``): what the clip cost.

    ``method`` says what found them: ``"audio"`` (the fingerprint) or ``"words"`` (what is
    said, :mod:`citywok_pipeline.transcripts.identify`); ``note`` why there is no answer
    when that is more than "not in the library" ("no speech in the clip").
    """

    matches: tuple[Match, ...]
    ambiguous: bool
    query_hashes: int
    passes: tuple[str, ...] = ()
    method: str = "audio"
    note: str = ""

    def to_dict(self, query: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": query,
            "ambiguous": self.ambiguous,
            "method": self.method,
            "matches": [{**m.to_dict(), "method": self.method} for m in self.matches],
        }
        if self.note:
            out["note"] = self.note
        return out
