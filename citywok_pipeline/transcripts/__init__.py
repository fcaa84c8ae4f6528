"""The transcript side of the core: transcription, segment embeddings and search records.

Dagster-free, like ``fingerprint`` and ``snapshot``: the assets are thin wrappers over it.
"""

from .errors import ModelNotFoundError, TranscriptError
from .records import SearchHit, Segment, Transcript, Word

__all__ = [
    "ModelNotFoundError",
    "SearchHit",
    "Segment",
    "Transcript",
    "TranscriptError",
    "Word",
]
