"""Errors of the transcript side; messages name the file or path and the problem."""

from __future__ import annotations


class TranscriptError(Exception):
    """Transcription, embedding or transcript search cannot go on; the message says why."""


class ModelNotFoundError(TranscriptError):
    """A configured model path does not exist or does not hold a usable model."""

    def __init__(self, path: str, reason: str = "no such file or directory") -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: model not found: {reason}")
