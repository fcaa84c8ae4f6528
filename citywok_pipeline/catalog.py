"""The video catalog: which videos exist, which season each belongs to, and what was built.

Dagster has no dynamic-to-dynamic partition mapping, so the video-to-season relation is data,
kept here, behind one interface (:class:`Catalog`, opened by :func:`open_catalog`) with two
implementations: a SQLite file (the embedded default, ``$CITYWOK_HOME/catalog.sqlite``, WAL
mode, for the sensor and the step processes of one machine) and a Postgres database
(``CITYWOK_CATALOG_URL``, for steps on many machines). Every call is one short transaction; a
``catalog_meta`` row holds the schema version, and older catalogs are migrated on open.

- ``videos``: per video (the ``videos`` partition key): season, show, numbers, source path
  and URI, title, size and mtime when last seen, when it was found and last changed, when it
  was removed (NULL while present), and what the pipeline recorded: the media file's sha256
  and duration, and the data versions of its raw audio, fingerprints and segment embeddings.
- ``seasons``: per season, the inputs of the shard last built (``{video: input version}``,
  see :func:`input_version`), when, and the shard's data version.

The decisions ("what is new", "which seasons need a new shard") are the plain functions
:func:`plan_scan` and :func:`plan_seasons`, tested without Dagster; the sensors only feed
them and turn their answers into partitions and run requests.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artefacts import data_version

# 2: videos.embeddings_version (added to version-1 catalogs on open).
SCHEMA_VERSION = 2


def utc_now() -> str:
    """Now as an ISO-8601 UTC timestamp with microseconds (sorts as text)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass(frozen=True, kw_only=True)
class ScannedFile:
    """One media file as a scan of the source sees it."""

    episode_id: str
    season: str
    show: str
    season_number: int | None
    episode_number: int | None
    source: str
    source_uri: str
    title: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, kw_only=True)
class VideoRecord:
    """One row of the catalog's ``videos`` table."""

    episode_id: str
    season: str
    show: str
    season_number: int | None
    episode_number: int | None
    source: str
    source_uri: str
    title: str
    size: int
    mtime_ns: int
    found_at: str
    changed_at: str
    removed_at: str | None = None
    sha256: str | None = None
    duration_s: float | None = None
    audio_version: str | None = None
    fingerprints_version: str | None = None
    fingerprinted_at: str | None = None
    embeddings_version: str | None = None

    @property
    def removed(self) -> bool:
        return self.removed_at is not None

    @property
    def input_version(self) -> str | None:
        """What this video gives its season's shard (None: nothing yet)."""
        if not self.fingerprints_version:
            return None
        return input_version(self.fingerprints_version, self.embeddings_version)


def input_version(fingerprints_version: str, embeddings_version: str | None = None) -> str:
    """A video's input to its season's shard: its fingerprints' data version, and its segment
    embeddings' after a ``+`` once it has some (so new or changed embeddings rebuild the shard)."""
    if embeddings_version:
        return f"{fingerprints_version}+{embeddings_version}"
    return fingerprints_version


def fingerprints_of(version: str) -> str:
    """The fingerprints' data version inside an :func:`input_version`."""
    return version.split("+", 1)[0]


@dataclass(frozen=True)
class SeasonBuild:
    """What the season's current shard was built from."""

    season: str
    built_at: str
    inputs: dict[str, str]
    shard_version: str | None


# ----------------------------------------------------------------------------------------------
# Decisions (plain functions)


@dataclass(frozen=True)
class VideoRun:
    episode_id: str
    run_key: str


@dataclass(frozen=True)
class ScanPlan:
    """What a scan of the media source means for the catalog and the partitions."""

    upserts: tuple[VideoRecord, ...] = ()
    new: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    duplicates: tuple[tuple[str, str], ...] = ()
    add_video_partitions: tuple[str, ...] = ()
    add_season_partitions: tuple[str, ...] = ()
    delete_video_partitions: tuple[str, ...] = ()
    runs: tuple[VideoRun, ...] = ()
    refused: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.upserts or self.removed or self.add_video_partitions
                    or self.add_season_partitions or self.delete_video_partitions or self.runs)  # fmt: skip


def plan_scan(
    files: Sequence[ScannedFile],
    catalog: Mapping[str, VideoRecord],
    *,
    video_partitions: Set[str],
    season_partitions: Set[str],
    now: str,
) -> ScanPlan:
    """Compare a scan with the catalog and the instance's partitions.

    A file is *new* when the catalog does not know it or knows it as removed, *changed* when
    its size, mtime, path or season differ from the catalog's; both get a run. A file whose
    video partition is missing from the instance also gets its partition and a run, whatever
    the catalog says (the catalog and the instance can disagree after a crash or a wipe).
    A video never decoded (its run pending, lost or failed) is requested again under the same
    run key. Run keys name the file's generation (``found_at``, size, mtime): the daemon runs
    a key once, so an unchanged file is never run twice (a corrupt one is not retried on every
    scan) and a file that changes or comes back after removal is run again.

    A video the catalog knows as present and the scan no longer has is *removed*: marked in
    the catalog and its partition deleted. A scan that finds no file at all while the
    catalog holds videos is refused (an unmounted disk must not empty the index).
    """
    seen: dict[str, ScannedFile] = {}
    duplicates: list[tuple[str, str]] = []
    for f in files:
        if f.episode_id in seen:
            duplicates.append(
                (f.source, f"episode id {f.episode_id} is already {seen[f.episode_id].source}")
            )
        else:
            seen[f.episode_id] = f
    live = [r for r in catalog.values() if not r.removed]
    if not seen and live:
        return ScanPlan(
            duplicates=tuple(duplicates),
            refused=f"the media source lists no files while the catalog has {len(live)} video(s): "
            "not marking them removed (is the media root mounted?)",
        )

    upserts: list[VideoRecord] = []
    new: list[str] = []
    changed: list[str] = []
    runs: list[VideoRun] = []
    add_videos: list[str] = []
    add_seasons: list[str] = []
    for episode_id, f in seen.items():
        rec = catalog.get(episode_id)
        facts = dict(
            episode_id=f.episode_id, season=f.season, show=f.show,
            season_number=f.season_number, episode_number=f.episode_number,
            source=f.source, source_uri=f.source_uri, title=f.title, size=f.size,
            mtime_ns=f.mtime_ns,
        )  # fmt: skip
        if rec is None or rec.removed:
            rec = VideoRecord(**facts, found_at=now, changed_at=now)
            upserts.append(rec)
            new.append(episode_id)
        elif (rec.size, rec.mtime_ns, rec.source, rec.season, rec.source_uri, rec.title) != (
            f.size,
            f.mtime_ns,
            f.source,
            f.season,
            f.source_uri,
            f.title,
        ):
            # What the pipeline recorded stays until the new file is processed: a changed file
            # that turns out corrupt leaves the season's shard as it was.
            rec = VideoRecord(**{**rec.__dict__, **facts, "changed_at": now, "removed_at": None})
            upserts.append(rec)
            changed.append(episode_id)
        missing_partition = episode_id not in video_partitions
        if missing_partition:
            add_videos.append(episode_id)
        if f.season not in season_partitions and f.season not in add_seasons:
            add_seasons.append(f.season)
        # A video never decoded is requested again on every scan under the same run key: the
        # daemon drops keys it has seen, and a request lost between this catalog write and
        # the daemon's run submission is made again on the next tick.
        unprocessed = rec.audio_version is None
        if missing_partition or unprocessed or episode_id in new or episode_id in changed:
            runs.append(VideoRun(episode_id, f"{episode_id}@{rec.found_at}:{f.size}:{f.mtime_ns}"))

    removed = sorted(r.episode_id for r in live if r.episode_id not in seen)
    gone = {eid for eid, r in catalog.items() if r.removed and eid not in seen}
    delete = sorted(eid for eid in (set(removed) | gone) if eid in video_partitions)
    return ScanPlan(
        upserts=tuple(upserts),
        new=tuple(new),
        changed=tuple(changed),
        removed=tuple(removed),
        duplicates=tuple(duplicates),
        add_video_partitions=tuple(add_videos),
        add_season_partitions=tuple(add_seasons),
        delete_video_partitions=tuple(delete),
        runs=tuple(runs),
    )


@dataclass(frozen=True)
class SeasonRequest:
    season: str
    inputs: dict[str, str] = field(hash=False)
    run_key: str


def season_inputs(videos: Iterable[VideoRecord]) -> dict[str, dict[str, str]]:
    """What each season's shard should hold: present videos with fingerprints, by
    :attr:`VideoRecord.input_version`."""
    out: dict[str, dict[str, str]] = {}
    for v in videos:
        out.setdefault(v.season, {})
        version = v.input_version
        if not v.removed and version:
            out[v.season][v.episode_id] = version
    return out


def plan_seasons(
    videos: Iterable[VideoRecord],
    builds: Mapping[str, SeasonBuild],
    *,
    in_progress: Set[str] = frozenset(),
) -> list[SeasonRequest]:
    """Seasons whose shard is out of date: a video was (re)fingerprinted or (re)embedded,
    added or removed.

    A season never built is requested once one of its videos has fingerprints; a built one
    whenever its present, fingerprinted videos differ from what went into the shard (which
    includes a season whose videos were all removed: its shard must go). A video without
    fingerprints (not processed yet, or failed) does not trigger a build, so a corrupt file
    leaves its season's shard as it was. The run key names the shard generation and the
    wanted inputs: a pending request is not repeated, a later change gets a new one.

    A season in ``in_progress`` (a build queued or running) gets no request: builds of one
    season never pile up. Once that build ends its record moves on, and a season whose inputs
    still differ is requested again under a new run key.
    """
    wanted = season_inputs(videos)
    requests: list[SeasonRequest] = []
    for season in sorted((set(wanted) | set(builds)) - set(in_progress)):
        cur = wanted.get(season, {})
        built = builds.get(season)
        if (built is None and not cur) or (built is not None and built.inputs == cur):
            continue
        generation = built.built_at if built else "never"
        digest = data_version(json.dumps(cur, sort_keys=True))
        requests.append(SeasonRequest(season, cur, f"{season}@{generation}:{digest}"))
    return requests


# ----------------------------------------------------------------------------------------------
# Storage: one interface, SQLite (the embedded default) and Postgres (production)


_VIDEO_COLUMNS = tuple(VideoRecord.__dataclass_fields__)
# What a scan knows about a file; the rest is what the pipeline recorded.
_FACTS = ("season", "show", "season_number", "episode_number", "source", "source_uri", "title",
          "size", "mtime_ns", "changed_at", "removed_at")  # fmt: skip
_RECORDED = tuple(c for c in _VIDEO_COLUMNS if c not in (*_FACTS, "episode_id", "found_at"))

_TABLES = """
CREATE TABLE IF NOT EXISTS videos (
    episode_id TEXT PRIMARY KEY,
    season TEXT NOT NULL,
    show TEXT NOT NULL,
    season_number INTEGER,
    episode_number INTEGER,
    source TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    title TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    found_at TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    removed_at TEXT,
    sha256 TEXT,
    duration_s {real},
    audio_version TEXT,
    fingerprints_version TEXT,
    fingerprinted_at TEXT,
    embeddings_version TEXT
);
CREATE INDEX IF NOT EXISTS videos_by_season ON videos (season);
CREATE TABLE IF NOT EXISTS seasons (
    season TEXT PRIMARY KEY,
    built_at TEXT NOT NULL,
    inputs TEXT NOT NULL,
    shard_version TEXT
);
CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# A scanned file's row: inserted, or its facts updated. A row that is present keeps what the
# pipeline recorded and when it was found (its run key): of two writers racing on one new
# video, the first insert wins and the second only repeats its facts. A row that was removed
# comes back as the writer has it (found again: processed again).
_UPSERT_VIDEO = (
    f"INSERT INTO videos ({', '.join(_VIDEO_COLUMNS)}) VALUES ({', '.join('?' for _ in _VIDEO_COLUMNS)}) "
    "ON CONFLICT (episode_id) DO UPDATE SET "
    + ", ".join(
        [f"{c} = excluded.{c}" for c in _FACTS]
        + [
            f"{c} = CASE WHEN videos.removed_at IS NULL THEN videos.{c} ELSE excluded.{c} END"
            for c in ("found_at", *_RECORDED)
        ]
    )
)


class CatalogError(Exception):
    """The catalog cannot be used; the message names it (a database URL without its password)."""


class CatalogUnavailableError(CatalogError):
    """The catalog database cannot be reached; nothing was written."""


class Catalog(ABC):
    """The catalog: every method is one short transaction, all or nothing.

    Open one with :func:`open_catalog`: :class:`SqliteCatalog` (a file, the embedded default)
    or :class:`PostgresCatalog` (a database, for steps on many machines).
    """

    #: Where the catalog is, for messages (never a password).
    name: str

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """A connection in a transaction, committed when the block ends, rolled back on error."""

    @abstractmethod
    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run ``sql`` (``?`` placeholders); the rows it returns as dicts."""

    @abstractmethod
    def _execute_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def schema_version(self) -> int:
        with self._transaction() as conn:
            rows = self._execute(
                conn, "SELECT value FROM catalog_meta WHERE key = 'schema_version'"
            )
        return int(rows[0]["value"])

    # videos

    def videos(
        self, *, season: str | None = None, include_removed: bool = False
    ) -> list[VideoRecord]:
        """Videos in season and episode order (one season's, if given; removed ones if asked)."""
        where = [c for c, on in (("season = ?", season is not None),
                                 ("removed_at IS NULL", not include_removed)) if on]  # fmt: skip
        sql = "SELECT * FROM videos" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY season, episode_number, episode_id"
        with self._transaction() as conn:
            rows = self._execute(conn, sql, [season] if season is not None else [])
        return [VideoRecord(**r) for r in rows]

    def video(self, episode_id: str) -> VideoRecord | None:
        with self._transaction() as conn:
            rows = self._execute(conn, "SELECT * FROM videos WHERE episode_id = ?", [episode_id])
        return VideoRecord(**rows[0]) if rows else None

    def apply_scan(self, plan: ScanPlan, *, now: str) -> None:
        """Write a scan plan: insert or update its records, mark its removed videos."""
        with self._transaction() as conn:
            self._execute_many(
                conn,
                _UPSERT_VIDEO,
                [tuple(getattr(r, c) for c in _VIDEO_COLUMNS) for r in plan.upserts],
            )
            self._execute_many(
                conn,
                "UPDATE videos SET removed_at = ? WHERE episode_id = ? AND removed_at IS NULL",
                [(now, eid) for eid in plan.removed],
            )

    def record_audio(
        self, episode_id: str, *, sha256: str, duration_s: float, audio_version: str
    ) -> None:
        self._update(
            "UPDATE videos SET sha256 = ?, duration_s = ?, audio_version = ? WHERE episode_id = ?",
            (sha256, duration_s, audio_version, episode_id),
        )

    def record_fingerprints(self, episode_id: str, *, version: str, at: str | None = None) -> None:
        self._update(
            "UPDATE videos SET fingerprints_version = ?, fingerprinted_at = ? WHERE episode_id = ?",
            (version, at or utc_now(), episode_id),
        )

    def record_embeddings(self, episode_id: str, *, version: str | None) -> None:
        """The data version of the video's segment embeddings (None: it has none)."""
        self._update(
            "UPDATE videos SET embeddings_version = ? WHERE episode_id = ?", (version, episode_id)
        )

    def _update(self, sql: str, params: Sequence[Any]) -> None:
        with self._transaction() as conn:
            self._execute(conn, sql, params)

    # seasons

    def season_builds(self) -> dict[str, SeasonBuild]:
        with self._transaction() as conn:
            rows = self._execute(conn, "SELECT * FROM seasons")
        return {
            r["season"]: SeasonBuild(
                r["season"], r["built_at"], json.loads(r["inputs"]), r["shard_version"]
            )
            for r in rows
        }

    def record_season_build(
        self,
        season: str,
        *,
        inputs: Mapping[str, str],
        shard_version: str | None,
        at: str | None = None,
    ) -> None:
        self._update(
            "INSERT INTO seasons (season, built_at, inputs, shard_version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (season) DO UPDATE SET built_at = excluded.built_at, "
            "inputs = excluded.inputs, shard_version = excluded.shard_version",
            (season, at or utc_now(), json.dumps(dict(inputs), sort_keys=True), shard_version),
        )

    # schema

    def _create_or_migrate(self, conn: Any) -> None:
        """Create the tables, or bring an older catalog to :data:`SCHEMA_VERSION` (under a lock
        the caller holds); a catalog written by newer code is refused."""
        rows = self._execute(conn, "SELECT value FROM catalog_meta WHERE key = 'schema_version'")
        found = int(rows[0]["value"]) if rows else None
        if found is not None and found > SCHEMA_VERSION:
            raise CatalogError(
                f"{self.name}: catalog schema version {found} is newer than this code "
                f"({SCHEMA_VERSION}); upgrade citywok"
            )
        if found is not None and found < 2:
            self._add_column_if_missing(conn, "videos", "embeddings_version", "TEXT")
        if found != SCHEMA_VERSION:
            self._execute(
                conn,
                "INSERT INTO catalog_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(SCHEMA_VERSION)],
            )

    @abstractmethod
    def _add_column_if_missing(self, conn: Any, table: str, column: str, kind: str) -> None: ...


class SqliteCatalog(Catalog):
    """The catalog in one SQLite file (WAL mode: the sensor and the step processes of one
    machine share it; steps on other machines need :class:`PostgresCatalog`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._ready = False

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
            if not self._ready:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")  # one creator or migrator at a time
                try:
                    for statement in _TABLES.format(real="REAL").split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    self._create_or_migrate(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                self._ready = True
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(sql, tuple(params)).fetchall()]

    def _execute_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(sql, rows)

    def _add_column_if_missing(self, conn: Any, table: str, column: str, kind: str) -> None:
        have = {r["name"] for r in self._execute(conn, f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


# The catalog's tables live in their own schema: the transcript database has a `videos` table.
PG_SCHEMA = "citywok_catalog"
# Serialises creating and migrating the schema (concurrent CREATE TABLE IF NOT EXISTS can fail).
_PG_INIT_LOCK = 0x43415441  # "CATA"


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:  # not parseable: say only that it was given
        return "<unparseable database URL>"
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


class PostgresCatalog(Catalog):
    """The catalog in a Postgres database (psycopg 3), in the schema :data:`PG_SCHEMA`: steps
    and sensors on any machine share it. Unique keys and transactions keep concurrent writers
    from duplicating or losing a video."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.name = redact_url(url)
        self.connect_timeout_s = connect_timeout_s
        self._ready = False

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(
                self.url,
                connect_timeout=max(1, round(self.connect_timeout_s)),
                row_factory=dict_row,
                options=f"-c search_path={PG_SCHEMA}",
            )
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> CatalogUnavailableError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = _password(self.url)
        if password:
            reason = reason.replace(password, "***")
        return CatalogUnavailableError(
            f"catalog database {self.name} is unreachable ({reason}); nothing was written"
        )

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        import psycopg

        conn = self._connect()
        try:
            if not self._ready:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_INIT_LOCK,))
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
                    conn.execute(_TABLES.format(real="DOUBLE PRECISION"))
                    self._create_or_migrate(conn)
                self._ready = True
            with conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None
        finally:
            conn.close()

    @staticmethod
    def _pg(sql: str) -> str:
        return sql.replace("?", "%s")

    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = conn.execute(self._pg(sql), tuple(params))
        return list(cur.fetchall()) if cur.description else []

    def _execute_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with conn.cursor() as cur:
                cur.executemany(self._pg(sql), rows)

    def _add_column_if_missing(self, conn: Any, table: str, column: str, kind: str) -> None:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")


def _password(url: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url).get("password") or None
    except Exception:
        return None


def is_database_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_catalog(target: str | os.PathLike[str]) -> Catalog:
    """The catalog at ``target``: a ``postgresql://`` URL, or the path of a SQLite file
    (``sqlite:///path`` or a plain path)."""
    text = os.fspath(target)
    if is_database_url(text):
        return PostgresCatalog(text)
    if text.startswith("sqlite:///"):
        return SqliteCatalog(text[len("sqlite://") :])
    if "://" in text:
        raise CatalogError(
            f"catalog {redact_url(text) if '@' in text else text!r}: not a postgresql:// URL or "
            "a SQLite path"
        )
    return SqliteCatalog(text)
