"""The Dagster-free LMDB snapshot format: write, open, verify."""

from .directory import Snapshot, shard_path, shard_paths, verify_snapshot
from .shard import (
    FORMAT_VERSION,
    CorruptShardError,
    ParamsMismatchError,
    Shard,
    ShardInfo,
    SnapshotError,
    open_shard,
    verify_shard,
    write_shard,
)

__all__ = [
    "FORMAT_VERSION",
    "CorruptShardError",
    "ParamsMismatchError",
    "Shard",
    "ShardInfo",
    "Snapshot",
    "SnapshotError",
    "open_shard",
    "shard_path",
    "shard_paths",
    "verify_shard",
    "verify_snapshot",
    "write_shard",
]
