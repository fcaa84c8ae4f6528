"""A transcript as stored in the artefact store: ``Transcript.to_json``, zstd-compressed."""

from __future__ import annotations

import zstandard

from ..artefacts import ArtefactFormatError, data_version
from .records import Transcript

__all__ = ["pack_transcript", "unpack_transcript"]


def pack_transcript(transcript: Transcript) -> tuple[bytes, str]:
    """The compressed artefact and its data version (a hash of the JSON, not of the zstd bytes)."""
    body = transcript.to_json()
    return zstandard.ZstdCompressor(level=10).compress(body), data_version(body)


def unpack_transcript(blob: bytes, *, label: str = "transcript") -> Transcript:
    """Inverse of :func:`pack_transcript`; raises ArtefactFormatError naming ``label``."""
    try:
        body = zstandard.ZstdDecompressor().decompress(blob)
    except zstandard.ZstdError as exc:
        raise ArtefactFormatError(f"{label}: not a readable transcript artefact ({exc})") from exc
    try:
        return Transcript.from_json(body, label=label)
    except ValueError as exc:
        raise ArtefactFormatError(str(exc)) from exc
