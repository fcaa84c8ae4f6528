"""Transcript search in PostgreSQL with pgvector, for deployments that keep transcripts in a
database (the snapshot holds them too; this is the other place to ask "where do they say X?").

Two tables: ``videos`` (one row per episode) and ``transcript_segments`` (one row per segment
with text, times, speaker and a ``vector(dim)`` embedding). Segments are found by cosine
distance through an HNSW index (``vector_cosine_ops``); the optional keyword filter uses a
``tsvector`` of the text (the ``simple`` configuration: lower-cased whole words, no stemming,
no stop words) with a GIN index, and ranks the matching rows by distance. A one-row
``citywok_schema`` table records the schema version, the dimension and the embedding model, so
a database built for other vectors is refused with a clear error instead of mixing them.

Each video is written in one transaction: its ``videos`` row is upserted, its old segments
deleted and the new ones copied in (binary ``COPY``), so re-running replaces and never
duplicates, and a reader sees either the old rows or the new ones.

Values are always passed as parameters; identifiers and the dimension (validated integers)
are composed with :mod:`psycopg.sql`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import sql

from .embedder import Embedder
from .errors import TranscriptError
from .records import SearchHit, Segment, Transcript

SCHEMA_VERSION = 1
DEFAULT_LIMIT = 10
# HNSW candidates kept per query (pgvector's default is 40). On simulated clustered segments
# (benchmarks/search_pg.py, m=16, ef_construction=64, this 2-core CPU): 100k segments reach
# recall@10 0.96 at 200; 1M reach 0.84 at 400 (p50 22 ms) and 0.90 at 1000 (p50 28 ms).
DEFAULT_EF_SEARCH = 400
MAX_EF_SEARCH = 1000  # pgvector's upper bound
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
TEXT_SEARCH_CONFIG = "simple"
# Serialises schema creation between processes that start at once (two asset runs).
_SCHEMA_LOCK = 0x63_77_70_67  # "cwpg"

__all__ = [
    "DEFAULT_EF_SEARCH",
    "SCHEMA_VERSION",
    "DatabaseInfo",
    "DatabaseUnavailableError",
    "TranscriptDatabaseError",
    "UpsertResult",
    "connect",
    "database_host",
    "database_info",
    "delete_video",
    "ensure_schema",
    "redact_url",
    "search",
    "search_text",
    "searchable_segments",
    "upsert_video",
]


class TranscriptDatabaseError(TranscriptError):
    """The transcript database is unreachable, or holds something these calls cannot use."""


class DatabaseUnavailableError(TranscriptDatabaseError):
    """The database did not answer (down, wrong host, refused credentials): worth a retry."""


@dataclass(frozen=True)
class DatabaseInfo:
    """What a transcript database holds: its schema row and row counts."""

    schema_version: int
    dim: int
    model: str
    videos: int
    segments: int


@dataclass(frozen=True)
class UpsertResult:
    """One video written: how many segment rows went in, and how many old ones they replaced."""

    episode_id: str
    segments: int
    replaced: int


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``), for messages."""
    if "://" not in url:  # key=value conninfo
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            return "<unparseable connection string>"
        if "password" in params:
            params["password"] = "***"
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def database_host(url: str) -> str:
    """Where ``url`` points (``host:port/db`` or the socket directory), without credentials."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(_libpq_url(url))
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    return f"{host}{port}/{params.get('dbname') or params.get('user') or ''}"


def _libpq_url(url: str) -> str:
    # SQLAlchemy-style URLs (postgresql+psycopg2://) name a driver libpq does not know.
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith(("postgresql+", "postgres+")):
        return "postgresql://" + rest
    return url


def connect(url: str, *, connect_timeout_s: int = 10) -> psycopg.Connection[Any]:
    """Open a connection (autocommit; the writers open their own transactions).

    Raises
    ------
    TranscriptDatabaseError
        ``url`` is empty, malformed or unreachable; the message names it without its password.
    """
    if not url or not url.strip():
        raise TranscriptDatabaseError(
            "no transcript database URL given (set CITYWOK_DATABASE_URL or pass --database)"
        )
    try:
        return psycopg.connect(
            _libpq_url(url.strip()),
            autocommit=True,
            connect_timeout=connect_timeout_s,
            application_name="citywok",
        )
    except psycopg.ProgrammingError as exc:
        raise TranscriptDatabaseError(
            f"{redact_url(url)}: not a PostgreSQL connection URL ({exc})"
        ) from exc
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise DatabaseUnavailableError(
            f"{redact_url(url)}: cannot connect to the transcript database: {reason}"
        ) from exc


@contextmanager
def _connection(url_or_conn: str | psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    if isinstance(url_or_conn, psycopg.Connection):
        yield url_or_conn
        return
    conn = connect(url_or_conn)
    try:
        yield conn
    finally:
        conn.close()


def _label(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    host = info.host or "localhost"
    return f"{host}:{info.port}/{info.dbname}" if info.port else f"{host}/{info.dbname}"


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= 16000:
        raise TranscriptDatabaseError(f"dim must be an integer from 1 to 16000, got {dim!r}")
    return int(dim)


def ensure_schema(conn: psycopg.Connection[Any], *, dim: int, model: str = "") -> DatabaseInfo:
    """Create the extension, tables and indexes if missing; check an existing schema.

    Parameters
    ----------
    conn : psycopg.Connection
    dim : int
        The embedding dimension (384 for all-MiniLM-L6-v2).
    model : str
        The embedding model; recorded when the database has none yet, checked otherwise.

    Raises
    ------
    TranscriptDatabaseError
        The database holds another schema version, another dimension or another model, or
        the ``vector`` extension cannot be created.
    """
    dim = _check_dim(dim)
    if not _has_tables(conn):
        _create_schema(conn, dim)
    with conn.transaction():
        row = conn.execute("SELECT version, dim, model FROM citywok_schema FOR UPDATE").fetchone()
        if row is None:
            raise TranscriptDatabaseError(f"{_label(conn)}: the citywok_schema table is empty")
        version, have_dim, have_model = int(row[0]), int(row[1]), str(row[2])
        if version != SCHEMA_VERSION:
            raise TranscriptDatabaseError(
                f"{_label(conn)}: transcript schema version {version}, this code uses "
                f"{SCHEMA_VERSION}; migrate the database or use a new one"
            )
        if have_dim != dim:
            raise TranscriptDatabaseError(
                f"{_label(conn)}: the database holds {have_dim}-d embeddings"
                f"{f' ({have_model})' if have_model else ''}, not {dim}-d; "
                "use another database for another embedding model"
            )
        if model and have_model and model != have_model:
            raise TranscriptDatabaseError(
                f"{_label(conn)}: the database holds embeddings of {have_model}, not {model}; "
                "use another database for another embedding model"
            )
        if model and not have_model:
            conn.execute("UPDATE citywok_schema SET model = %s", (model,))
    _register(conn)
    return database_info(conn)


def _has_tables(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT to_regclass('citywok_schema') IS NOT NULL AND to_regclass('videos') IS NOT NULL "
        "AND to_regclass('transcript_segments') IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])


def _create_schema(conn: psycopg.Connection[Any], dim: int) -> None:
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS citywok_schema (
                    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                    version integer NOT NULL,
                    dim integer NOT NULL,
                    model text NOT NULL DEFAULT ''
                )
                """
            )
            conn.execute(
                "INSERT INTO citywok_schema (version, dim) VALUES (%s, %s) "
                "ON CONFLICT (singleton) DO NOTHING",
                (SCHEMA_VERSION, dim),
            )
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS videos (
                    episode_id text PRIMARY KEY,
                    season text NOT NULL DEFAULT '',
                    source text NOT NULL DEFAULT '',
                    title text NOT NULL DEFAULT '',
                    duration_s double precision,
                    model text NOT NULL DEFAULT '',
                    language text NOT NULL DEFAULT '',
                    segments integer NOT NULL DEFAULT 0,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            conn.execute(
                sql.SQL(
                    """
                    CREATE TABLE IF NOT EXISTS transcript_segments (
                        episode_id text NOT NULL
                            REFERENCES videos (episode_id) ON DELETE CASCADE,
                        seq integer NOT NULL,
                        start_s real NOT NULL,
                        end_s real NOT NULL,
                        text text NOT NULL,
                        speaker text,
                        embedding vector({dim}) NOT NULL,
                        text_search tsvector
                            GENERATED ALWAYS AS (to_tsvector({config}, text)) STORED,
                        PRIMARY KEY (episode_id, seq)
                    )
                    """
                ).format(dim=sql.Literal(dim), config=sql.Literal(TEXT_SEARCH_CONFIG))
            )
            conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS transcript_segments_embedding_hnsw "
                    "ON transcript_segments USING hnsw (embedding vector_cosine_ops) "
                    "WITH (m = {m}, ef_construction = {ef})"
                ).format(m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION))
            )
            conn.execute(
                "CREATE INDEX IF NOT EXISTS transcript_segments_text_search "
                "ON transcript_segments USING gin (text_search)"
            )
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
        raise TranscriptDatabaseError(
            f"{_label(conn)}: the pgvector extension is not available on the server ({exc}); "
            "install pgvector there"
        ) from exc


def _register(conn: psycopg.Connection[Any]) -> None:
    """Teach the connection pgvector's types (once: it costs a few catalog queries)."""
    from pgvector.psycopg import register_vector

    if conn.adapters.types.get("vector") is None:
        register_vector(conn)


def _schema_row(conn: psycopg.Connection[Any]) -> tuple[int, int, str]:
    """``(version, dim, model)`` of the database; refused when it holds no transcripts."""
    row = conn.execute("SELECT to_regclass('citywok_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise TranscriptDatabaseError(
            f"{_label(conn)}: no transcripts in this database (no citywok_schema table); "
            "materialise transcript_segments into it first"
        )
    schema = conn.execute("SELECT version, dim, model FROM citywok_schema").fetchone()
    if schema is None:
        raise TranscriptDatabaseError(f"{_label(conn)}: the citywok_schema table is empty")
    return int(schema[0]), int(schema[1]), str(schema[2])


def database_info(conn: psycopg.Connection[Any]) -> DatabaseInfo:
    """The schema row and the row counts (a count over every segment: not for hot paths).

    Raises
    ------
    TranscriptDatabaseError
        The database holds no transcript tables.
    """
    version, dim, model = _schema_row(conn)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM videos), (SELECT count(*) FROM transcript_segments)"
    ).fetchone()
    assert counts is not None
    return DatabaseInfo(version, dim, model, int(counts[0]), int(counts[1]))


def searchable_segments(transcript: Transcript) -> list[Segment]:
    """The segments that get a row and a vector: those with text, in time order.

    The same rule as :func:`citywok_pipeline.transcripts.embeddings.embed_transcript`, so its
    vectors line up with these segments.
    """
    return sorted(
        (s for s in transcript.segments if s.text.strip()), key=lambda s: (s.start, s.end)
    )


def upsert_video(
    conn: psycopg.Connection[Any],
    *,
    episode_id: str,
    season: str,
    source: str,
    title: str,
    duration_s: float,
    transcript: Transcript,
    vectors: np.ndarray,
    model: str,
) -> UpsertResult:
    """Write one video and its segments in one transaction, replacing what was there.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim)
        One embedding per :func:`searchable_segments` of ``transcript``, in that order (any
        float dtype; stored as float32). Cosine distance is used, so they need not be unit.
    model : str
        The embedding model, checked against the database's.

    Raises
    ------
    TranscriptDatabaseError
        Vectors that do not line up with the segments or do not fit the database's schema.
    """
    if not episode_id or not episode_id.strip():
        raise TranscriptDatabaseError("episode_id must not be empty")
    segments = searchable_segments(transcript)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(segments):
        raise TranscriptDatabaseError(
            f"{episode_id}: {len(segments)} segments with text but vectors of shape "
            f"{vectors.shape}; expected ({len(segments)}, dim)"
        )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise TranscriptDatabaseError(f"{episode_id}: the vectors hold NaN or infinite values")
    if len(vectors) and not (np.linalg.norm(vectors, axis=1) > 0).all():
        raise TranscriptDatabaseError(
            f"{episode_id}: a zero vector has no cosine distance; every segment needs a vector"
        )
    dim = vectors.shape[1] if vectors.shape[1] else _schema_dim(conn)
    ensure_schema(conn, dim=dim, model=model)
    label = _label(conn)
    try:
        with conn.transaction():
            conn.execute(
                """
                INSERT INTO videos AS v
                    (episode_id, season, source, title, duration_s, model, language, segments, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (episode_id) DO UPDATE SET
                    season = EXCLUDED.season, source = EXCLUDED.source, title = EXCLUDED.title,
                    duration_s = EXCLUDED.duration_s, model = EXCLUDED.model,
                    language = EXCLUDED.language, segments = EXCLUDED.segments,
                    updated_at = now()
                """,
                (
                    episode_id,
                    season,
                    source,
                    title,
                    float(duration_s),
                    model,
                    transcript.language,
                    len(segments),
                ),
            )
            replaced = conn.execute(
                "DELETE FROM transcript_segments WHERE episode_id = %s", (episode_id,)
            ).rowcount
            if segments:
                with conn.cursor().copy(
                    "COPY transcript_segments (episode_id, seq, start_s, end_s, text, speaker, embedding) "
                    "FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "int4", "float4", "float4", "text", "text", "vector"])
                    for seq, (seg, vec) in enumerate(zip(segments, vectors, strict=True)):
                        copy.write_row(
                            (
                                episode_id,
                                seq,
                                seg.start,
                                seg.end,
                                " ".join(seg.text.split()),
                                seg.speaker,
                                vec,
                            )
                        )
    except psycopg.OperationalError as exc:  # the server restarted or went away mid-write
        reason = " ".join(str(exc).split())
        raise DatabaseUnavailableError(
            f"{label}: the connection was lost while writing {episode_id} ({reason}); the "
            "server rolls back a transaction cut off before its commit: write it again"
        ) from exc
    return UpsertResult(episode_id, len(segments), max(replaced, 0))


def _schema_dim(conn: psycopg.Connection[Any]) -> int:
    """The database's dimension, for a video with no segments (whose vectors say none)."""
    row = conn.execute("SELECT to_regclass('citywok_schema') IS NOT NULL").fetchone()
    if row and row[0]:
        dim = conn.execute("SELECT dim FROM citywok_schema").fetchone()
        if dim:
            return int(dim[0])
    raise TranscriptDatabaseError(
        f"{_label(conn)}: the database has no schema yet and a video without segments does not "
        "say the embedding dimension; create it with ensure_schema(conn, dim=...) first"
    )


def delete_video(conn: psycopg.Connection[Any], episode_id: str) -> int:
    """Remove a video and its segments; the number of segment rows removed (0 if unknown)."""
    row = conn.execute("SELECT to_regclass('videos') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    with conn.transaction():
        removed = conn.execute(
            "DELETE FROM transcript_segments WHERE episode_id = %s", (episode_id,)
        ).rowcount
        conn.execute("DELETE FROM videos WHERE episode_id = %s", (episode_id,))
    return max(removed, 0)


def _keywords(keyword: str | Sequence[str] | None) -> list[str]:
    if keyword is None:
        return []
    words = [keyword] if isinstance(keyword, str) else list(keyword)
    out = []
    for kw in words:
        if not isinstance(kw, str) or not kw.strip():
            raise TranscriptDatabaseError(f"a keyword must be non-empty text, got {kw!r}")
        out.append(" ".join(kw.split()))
    return out


def search(
    url_or_conn: str | psycopg.Connection[Any],
    query_vector: np.ndarray,
    *,
    limit: int = DEFAULT_LIMIT,
    keyword: str | Sequence[str] | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
) -> list[SearchHit]:
    """The ``limit`` segments nearest ``query_vector`` by cosine distance, best first.

    Parameters
    ----------
    url_or_conn : str or psycopg.Connection
        A connection URL (opened and closed here) or an open connection.
    query_vector : np.ndarray, shape (dim,)
    limit : int
    keyword : str or sequence of str, optional
        Only segments holding each keyword (a word or a phrase), as whole words, ignoring case.
    ef_search : int
        HNSW candidates per query (raised to ``limit`` when smaller); more is slower and finds
        more of the exact nearest.

    Returns
    -------
    list of SearchHit
        ``score`` is the cosine similarity; ``extra`` holds ``season`` and ``speaker``.

    Raises
    ------
    TranscriptDatabaseError
        Unreachable, no transcript tables, a query of another dimension, or bad parameters.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise TranscriptDatabaseError(f"limit must be a positive integer, got {limit!r}")
    if not 1 <= ef_search <= MAX_EF_SEARCH:
        raise TranscriptDatabaseError(
            f"ef_search must be from 1 to {MAX_EF_SEARCH}, got {ef_search!r}"
        )
    keywords = _keywords(keyword)
    query = np.asarray(query_vector, dtype=np.float32)
    if query.ndim != 1 or not np.isfinite(query).all() or not np.linalg.norm(query) > 0:
        raise TranscriptDatabaseError(
            f"the query vector must be one finite, non-zero row, got shape {query.shape}"
        )
    with _connection(url_or_conn) as conn:
        _, dim, model = _schema_row(conn)
        if query.size != dim:
            raise TranscriptDatabaseError(
                f"{_label(conn)}: a {query.size}-d query for {dim}-d embeddings"
                f"{f' ({model})' if model else ''}"
            )
        _register(conn)
        where = sql.SQL(" AND ").join(
            sql.SQL("text_search @@ phraseto_tsquery({config}, {kw})").format(
                config=sql.Literal(TEXT_SEARCH_CONFIG), kw=sql.Placeholder()
            )
            for _ in keywords
        )
        nearest = sql.SQL(
            """
            SELECT episode_id, start_s, end_s, text, speaker, embedding <=> %s AS distance
            FROM transcript_segments {where}
            ORDER BY distance, episode_id, seq
            LIMIT %s
            """
        ).format(where=sql.SQL("WHERE ") + where if keywords else sql.SQL(""))
        query_sql = sql.SQL(
            """
            SELECT n.episode_id, v.source, v.season, n.start_s, n.end_s, n.text, n.speaker,
                   n.distance
            FROM ({nearest}) AS n JOIN videos AS v USING (episode_id)
            ORDER BY n.distance, n.episode_id, n.start_s
            """
        ).format(nearest=nearest)
        with conn.transaction():
            # With a keyword the planner may still walk the HNSW graph and filter; let it keep
            # walking until enough rows pass, in distance order.
            conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), "
                "set_config('hnsw.iterative_scan', 'strict_order', true)",
                (str(max(ef_search, limit)),),
            )
            rows = conn.execute(query_sql, (query, *keywords, limit)).fetchall()
    return [
        SearchHit(
            episode_id=episode_id,
            source=source,
            start_s=float(start_s),
            end_s=float(end_s),
            text=text,
            score=1.0 - float(distance),
            extra={"season": season, "speaker": speaker},
        )
        for episode_id, source, season, start_s, end_s, text, speaker, distance in rows
    ]


def search_text(
    url: str | psycopg.Connection[Any],
    text: str,
    *,
    embedder: Embedder,
    limit: int = DEFAULT_LIMIT,
    keyword: str | Sequence[str] | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
) -> list[SearchHit]:
    """Segments nearest what ``text`` means, embedded with ``embedder``, best first.

    Raises
    ------
    TranscriptDatabaseError
        As :func:`search`; also when the database was filled by another embedding model.
    TranscriptError
        Empty text.
    """
    if not text or not text.strip():
        raise TranscriptError("the search text is empty")
    with _connection(url) as conn:
        _, dim, model = _schema_row(conn)
        if model and (model, dim) != (embedder.model_name, embedder.dim):
            raise TranscriptDatabaseError(
                f"{_label(conn)}: segments were embedded with {model} ({dim}-d), but "
                f"the query model is {embedder.model_name} ({embedder.dim}-d); "
                "search with the model that filled the database"
            )
        query = embedder.embed([text])[0]
        return search(conn, query, limit=limit, keyword=keyword, ef_search=ef_search)
