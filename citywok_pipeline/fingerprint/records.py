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

    ``offset_s`` is where the clip's first sample lies in the episode; ``score`` counts the
    clip's hashes that line up at that offset; ``confidence`` estimates the probability that
    the alignment is not chance.
    """

    episode_id: str
    source: str
    season: str
    offset_s: float
    score: int
    confidence: float
    speed: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "source": self.source,
            "season": self.season,
            "offset_s": round(self.offset_s, 2),
            "score": self.score,
            "confidence": round(self.confidence, 3),
            "speed": round(self.speed, 4),
        }


@dataclass(frozen=True, kw_only=True)
class MatchResult:
    """The answer for one clip: matches best first (empty when not in the library)."""

    matches: tuple[Match, ...]
    ambiguous: bool
    query_hashes: int

    def to_dict(self, query: str) -> dict[str, Any]:
        return {
            "query": query,
            "ambiguous": self.ambiguous,
            "matches": [m.to_dict() for m in self.matches],
        }
