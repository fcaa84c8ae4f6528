"""Media sources: where videos come from. For now, TV season folders on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..catalog import ScannedFile
from ..library import scan_media
from ..settings import citywok_home


@dataclass(frozen=True)
class SourceScan:
    """The files a source lists, and what it skipped and why."""

    files: list[ScannedFile]
    skipped: list[tuple[str, str]]


class SeasonFoldersResource(dg.ConfigurableResource):
    """A media tree ``<root>/<show>/<season folder>/<files>`` (see ``citywok_pipeline.library``)."""

    root: str | None = Field(
        default=None, description="The media root; default $CITYWOK_HOME/media."
    )

    @property
    def path(self) -> Path:
        return Path(self.root) if self.root else citywok_home() / "media"

    def scan(self) -> SourceScan:
        """Every episode file with its size and mtime; FileNotFoundError if the root is missing."""
        root = self.path.resolve()
        scan = scan_media(root)
        files: list[ScannedFile] = []
        skipped = list(scan.skipped)
        for mf in scan.files:
            try:
                st = mf.path.stat()
            except FileNotFoundError:  # deleted between listing and stat
                skipped.append((mf.source, "disappeared while scanning"))
                continue
            files.append(
                ScannedFile(
                    episode_id=mf.episode_id,
                    season=mf.season_id,
                    show=mf.show,
                    season_number=mf.season_number,
                    episode_number=mf.episode_number,
                    source=mf.source,
                    source_uri=mf.path.as_uri(),
                    title=mf.title,
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                )
            )
        return SourceScan(files, skipped)

    def locate(self, source: str) -> Path:
        """The local path of a file given relative to the root (as the catalog records it)."""
        return self.path.resolve() / source
