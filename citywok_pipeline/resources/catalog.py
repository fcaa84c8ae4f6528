"""The catalog as a resource: the video-to-season relation, in SQLite or Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from ..catalog import Catalog, open_catalog
from ..settings import citywok_home


class CatalogResource(dg.ConfigurableResource):
    """The video catalog (``citywok_pipeline.catalog``): a Postgres database when ``url`` is
    set (steps on several machines share it), else one SQLite file."""

    url: str | None = Field(
        default=None,
        description="postgresql://user:password@host:5432/db (CITYWOK_CATALOG_URL); unset: SQLite.",
    )
    path: str | None = Field(
        default=None, description="The SQLite file; default $CITYWOK_HOME/catalog.sqlite."
    )

    _catalog: Any = PrivateAttr(default=None)

    def open(self) -> Catalog:
        """The catalog (one per resource instance: its schema is checked once)."""
        if self._catalog is None:
            default = citywok_home() / "catalog.sqlite"
            self._catalog = open_catalog(self.url or (Path(self.path) if self.path else default))
        return self._catalog  # type: ignore[no-any-return]
