"""The local snapshot directory: a copy of each season shard on this machine, for
`citywok match $CITYWOK_HOME/snapshot` on the embedded default.

A cache, never a handoff: the steps read shards from the artefact store only. With a bucket
(``CITYWOK_BUCKET_URL=s3://...``) it is off; pull a published version instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..blobstore import BlobStore
from ..files import fsync_dir, remove_dead_temps, temp_beside
from ..settings import citywok_home
from ..snapshot import shard_path


class SnapshotDirectoryResource(dg.ConfigurableResource):
    """A snapshot directory with a copy of every season shard the pipeline built here."""

    path: str | None = Field(
        default=None, description="The snapshot directory; default $CITYWOK_HOME/snapshot."
    )
    enabled: bool = Field(
        default=True, description="Keep local copies (off with a bucket: pull a version instead)."
    )

    @property
    def directory(self) -> Path:
        return Path(self.path) if self.path else citywok_home() / "snapshot"

    def shard(self, season: str) -> Path:
        return shard_path(self.directory, season)

    def keep(self, season: str, store: BlobStore, key: str) -> Path | None:
        """Copy the stored shard here (written aside, then renamed); None when disabled."""
        if not self.enabled:
            return None
        target = self.shard(season)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A killed step's leftover temp file is removed by the next keep (or index).
        with temp_beside(target) as tmp:
            with open(tmp, "wb") as f:
                store.download(key, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
        remove_dead_temps(target.parent, ".*.lmdb.*.tmp")
        return target

    def keep_if_missing(self, season: str, store: BlobStore, key: str) -> None:
        """Copy the stored shard here unless a copy is here already."""
        if self.enabled and not self.shard(season).is_file():
            self.keep(season, store, key)

    def drop(self, season: str) -> None:
        self.shard(season).unlink(missing_ok=True)
