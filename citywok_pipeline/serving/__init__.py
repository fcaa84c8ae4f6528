"""The Dagster-free query server: a live snapshot and the HTTP API over it."""

from .app import (
    DEFAULT_MAX_CLIP_S,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_POLL_S,
    ServeConfig,
    create_app,
    default_workers,
    segment_count,
    serve,
)
from .live import BucketSource, DirectorySource, Held, LiveSnapshot, SnapshotSource

__all__ = [
    "DEFAULT_MAX_CLIP_S",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_POLL_S",
    "BucketSource",
    "DirectorySource",
    "Held",
    "LiveSnapshot",
    "ServeConfig",
    "SnapshotSource",
    "create_app",
    "default_workers",
    "segment_count",
    "serve",
]
