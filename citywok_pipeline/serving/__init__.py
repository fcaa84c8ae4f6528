"""The Dagster-free query server: a live snapshot and the HTTP API over it."""

from .app import (
    DEFAULT_MAX_CLIP_S,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_POLL_S,
    ServeConfig,
    create_app,
    default_workers,
    redact,
    segment_count,
    serve,
)
from .guard import ApiKeyError, hash_api_key, load_api_keys
from .live import BucketSource, DirectorySource, Held, LiveSnapshot, SnapshotSource, open_at_start

__all__ = [
    "DEFAULT_MAX_CLIP_S",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_POLL_S",
    "ApiKeyError",
    "BucketSource",
    "DirectorySource",
    "Held",
    "LiveSnapshot",
    "ServeConfig",
    "SnapshotSource",
    "create_app",
    "default_workers",
    "hash_api_key",
    "load_api_keys",
    "open_at_start",
    "redact",
    "segment_count",
    "serve",
]
