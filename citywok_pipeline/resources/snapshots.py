"""The local snapshot directory season shards are written into (what `citywok match` reads)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from ..settings import citywok_home
from ..snapshot import shard_path


class SnapshotDirectoryResource(dg.ConfigurableResource):
    """A snapshot directory: one LMDB shard per season."""

    path: str | None = Field(
        default=None, description="The snapshot directory; default $CITYWOK_HOME/snapshot."
    )

    @property
    def directory(self) -> Path:
        return Path(self.path) if self.path else citywok_home() / "snapshot"

    def shard(self, season: str) -> Path:
        return shard_path(self.directory, season)
