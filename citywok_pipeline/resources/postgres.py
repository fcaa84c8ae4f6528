"""The transcript database: PostgreSQL with pgvector, where transcript_segments writes."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from ..transcripts.postgres import connect, database_host


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL database with the pgvector extension (env ``CITYWOK_DATABASE_URL``).

    Only present when a database is configured; the snapshot holds the transcripts either way.
    """

    url: str = Field(
        description="A libpq URL, e.g. postgresql://user:password@host:5432/db "
        "(env CITYWOK_DATABASE_URL; shown in metadata without its password)."
    )

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection; the caller closes it (``with resource.connect() as c``)."""
        return connect(self.url)

    @property
    def host(self) -> str:
        """``host:port/db`` (or the socket directory), for metadata: no user, no password."""
        return database_host(self.url)
