"""The catalog as a resource: the SQLite file that holds the video-to-season relation."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from ..catalog import Catalog
from ..settings import citywok_home


class CatalogResource(dg.ConfigurableResource):
    """The video catalog (``citywok_pipeline.catalog``), one SQLite file."""

    path: str | None = Field(
        default=None, description="The catalog file; default $CITYWOK_HOME/catalog.sqlite."
    )

    def open(self) -> Catalog:
        return Catalog(Path(self.path) if self.path else citywok_home() / "catalog.sqlite")
