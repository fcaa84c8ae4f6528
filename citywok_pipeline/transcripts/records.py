"""Frozen records of the transcript side: words, segments, a video's transcript, search hits.

Times are seconds from the start of the video's audio. These are the shapes stored in the
artefact store (``Transcript.to_json``), written into season shards and returned by search.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Word:
    """One recognised word with its time span; ``probability`` when the model gives one."""

    start: float
    end: float
    text: str
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "probability": self.probability,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Word:
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            text=str(data["text"]),
            probability=None if data.get("probability") is None else float(data["probability"]),
        )


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A stretch of speech: ``start``/``end`` in seconds, its text, its words (in order, each
    inside the segment) and the speaker label when diarization ran."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "words": [w.to_dict() for w in self.words],
            "speaker": self.speaker,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            text=str(data["text"]),
            words=tuple(Word.from_dict(w) for w in data.get("words", ())),
            speaker=data.get("speaker"),
        )


TRANSCRIPT_FORMAT = "citywok-transcript"
TRANSCRIPT_FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Transcript:
    """One video's transcript. Silence or music-only audio has no segments (not an error).

    ``model`` names the model (a path's last component or a packaged model's name),
    ``backend`` the implementation (``faster-whisper``, ``whisperx``), ``device`` where it ran.
    """

    language: str
    duration_s: float
    segments: tuple[Segment, ...] = ()
    model: str = ""
    backend: str = ""
    device: str = ""

    @property
    def word_count(self) -> int:
        return sum(len(s.words) if s.words else len(s.text.split()) for s in self.segments)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRANSCRIPT_FORMAT,
            "format_version": TRANSCRIPT_FORMAT_VERSION,
            "language": self.language,
            "duration_s": self.duration_s,
            "model": self.model,
            "backend": self.backend,
            "device": self.device,
            "segments": [s.to_dict() for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        if data.get("format") != TRANSCRIPT_FORMAT:
            raise ValueError(f"not a {TRANSCRIPT_FORMAT} document (format={data.get('format')!r})")
        if data.get("format_version") != TRANSCRIPT_FORMAT_VERSION:
            raise ValueError(
                f"transcript format version {data.get('format_version')!r} is not supported "
                f"(this code reads {TRANSCRIPT_FORMAT_VERSION})"
            )
        return cls(
            language=str(data["language"]),
            duration_s=float(data["duration_s"]),
            segments=tuple(Segment.from_dict(s) for s in data.get("segments", ())),
            model=str(data.get("model", "")),
            backend=str(data.get("backend", "")),
            device=str(data.get("device", "")),
        )

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes, *, label: str = "transcript") -> Transcript:
        try:
            return cls.from_dict(json.loads(payload))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{label}: not a readable transcript: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class SearchHit:
    """One transcript segment found by ``search``; ``to_dict`` is the ``citywok search`` JSON
    shape: ``{"episode_id", "source", "start_s", "end_s", "text", "score"}``, and in hybrid
    search ``"cosine"`` and (where the words matched) ``"bm25"`` from ``extra``."""

    episode_id: str
    source: str
    start_s: float
    end_s: float
    text: str
    score: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "source": self.source,
            "start_s": round(self.start_s, 2),
            "end_s": round(self.end_s, 2),
            "text": self.text,
            "score": round(self.score, 4),
            **{k: round(float(self.extra[k]), 4) for k in ("cosine", "bm25") if k in self.extra},
        }
