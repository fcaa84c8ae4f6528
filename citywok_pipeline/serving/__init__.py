"""The Dagster-free query server: a live snapshot and the HTTP API over it."""

from .app import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_POLL_S, create_app, segment_count, serve
from .live import BucketSource, DirectorySource, Held, LiveSnapshot, SnapshotSource

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_POLL_S",
    "BucketSource",
    "DirectorySource",
    "Held",
    "LiveSnapshot",
    "SnapshotSource",
    "create_app",
    "segment_count",
    "serve",
]
