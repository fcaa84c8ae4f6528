"""The catalog and its decisions, without Dagster."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from citywok_pipeline.catalog import (
    SCHEMA_VERSION,
    CatalogError,
    CatalogUnavailableError,
    PostgresCatalog,
    ScannedFile,
    ScanPlan,
    SeasonBuild,
    VideoRecord,
    open_catalog,
    plan_scan,
    plan_seasons,
)
from tests.conftest import free_port

from .conftest import PG_HOST, PG_PORT, PG_USER

T0, T1, T2 = (
    "2026-01-01T00:00:00.000000Z",
    "2026-01-02T00:00:00.000000Z",
    "2026-01-03T00:00:00.000000Z",
)


def scanned(
    episode: int, season: str = "showa-s01", *, size: int = 100, mtime_ns: int = 1
) -> ScannedFile:
    eid = f"{season}e{episode:02d}"
    source = f"Show A/Season 01/Show A - S01E{episode:02d}.mp3"
    return ScannedFile(
        episode_id=eid, season=season, show="Show A", season_number=1, episode_number=episode,
        source=source, source_uri=f"file:///media/{source}", title=f"Show A - S01E{episode:02d}",
        size=size, mtime_ns=mtime_ns,
    )  # fmt: skip


def catalogued(f: ScannedFile, **changes: object) -> VideoRecord:
    rec = VideoRecord(**f.__dict__, found_at=T0, changed_at=T0)
    return replace(rec, **changes)  # type: ignore[arg-type]


def test_new_files_become_partitions_and_runs_in_one_plan() -> None:
    files = [scanned(1), scanned(2), scanned(1, "showb-s02")]
    plan = plan_scan(files, {}, video_partitions=set(), season_partitions=set(), now=T1)
    assert plan.new == ("showa-s01e01", "showa-s01e02", "showb-s02e01")
    assert plan.add_video_partitions == plan.new
    assert plan.add_season_partitions == ("showa-s01", "showb-s02")
    assert [r.episode_id for r in plan.runs] == list(plan.new)
    assert all(r.found_at == T1 for r in plan.upserts)


def test_unchanged_decoded_files_with_partitions_are_not_requested_again() -> None:
    files = [scanned(1), scanned(2)]
    cat = {f.episode_id: catalogued(f, audio_version="a") for f in files}
    plan = plan_scan(files, cat, video_partitions=set(cat), season_partitions={"showa-s01"}, now=T1)
    assert plan.is_empty


def test_a_video_never_decoded_is_requested_again_under_the_same_run_key() -> None:
    f = scanned(1)
    first = plan_scan([f], {}, video_partitions=set(), season_partitions=set(), now=T0)
    cat = {f.episode_id: first.upserts[0]}
    again = plan_scan(
        [f], cat, video_partitions={f.episode_id}, season_partitions={"showa-s01"}, now=T1
    )
    assert again.runs == first.runs
    assert not again.upserts and not again.add_video_partitions


def test_a_missing_partition_is_added_and_run_even_when_the_catalog_knows_the_video() -> None:
    f = scanned(1)
    plan = plan_scan(
        [f], {f.episode_id: catalogued(f)}, video_partitions=set(), season_partitions=set(), now=T1
    )
    assert plan.add_video_partitions == (f.episode_id,)
    assert plan.add_season_partitions == ("showa-s01",)
    assert [r.episode_id for r in plan.runs] == [f.episode_id]
    assert not plan.upserts


def test_a_changed_file_gets_a_new_run_key_and_keeps_what_was_recorded() -> None:
    f = scanned(1)
    rec = catalogued(f, fingerprints_version="abc", sha256="s", duration_s=15.0)
    before = (
        plan_scan([f], {}, video_partitions=set(), season_partitions=set(), now=T0).runs[0].run_key
    )
    g = replace(f, size=200, mtime_ns=2)
    plan = plan_scan(
        [g],
        {f.episode_id: rec},
        video_partitions={f.episode_id},
        season_partitions={"showa-s01"},
        now=T1,
    )
    assert plan.changed == (f.episode_id,)
    assert plan.runs[0].run_key != before
    (updated,) = plan.upserts
    assert (updated.size, updated.found_at, updated.changed_at) == (200, T0, T1)
    assert updated.fingerprints_version == "abc"


def test_a_vanished_video_is_marked_removed_and_its_partition_deleted() -> None:
    a, b = scanned(1), scanned(2)
    cat = {
        a.episode_id: catalogued(a, audio_version="x"),
        b.episode_id: catalogued(b, audio_version="y"),
    }
    plan = plan_scan([a], cat, video_partitions=set(cat), season_partitions={"showa-s01"}, now=T1)
    assert plan.removed == (b.episode_id,)
    assert plan.delete_video_partitions == (b.episode_id,)
    assert not plan.runs


def test_a_video_that_comes_back_is_new_again_with_a_fresh_run_key() -> None:
    f = scanned(1)
    first = plan_scan([f], {}, video_partitions=set(), season_partitions=set(), now=T0)
    gone = catalogued(f, removed_at=T1, fingerprints_version="old")
    back = plan_scan(
        [f], {f.episode_id: gone}, video_partitions=set(), season_partitions={"showa-s01"}, now=T2
    )
    assert back.new == (f.episode_id,)
    assert back.runs[0].run_key != first.runs[0].run_key
    assert back.upserts[0].fingerprints_version is None and back.upserts[0].removed_at is None


def test_an_empty_scan_never_empties_the_catalog() -> None:
    f = scanned(1)
    plan = plan_scan(
        [],
        {f.episode_id: catalogued(f)},
        video_partitions={f.episode_id},
        season_partitions=set(),
        now=T1,
    )
    assert plan.refused and "mounted" in plan.refused
    assert plan.is_empty


def test_two_files_claiming_one_episode_id_keep_the_first() -> None:
    a = scanned(1)
    b = replace(a, source="Show A/S01/other.mp3")
    plan = plan_scan([a, b], {}, video_partitions=set(), season_partitions=set(), now=T1)
    assert plan.new == (a.episode_id,)
    assert plan.duplicates[0][0] == b.source


def test_seasons_are_built_once_their_videos_have_fingerprints() -> None:
    a, b = catalogued(scanned(1)), catalogued(scanned(2))
    assert plan_seasons([a, b], {}) == []
    a = replace(a, fingerprints_version="va")
    (req,) = plan_seasons([a, b], {})
    assert (req.season, req.inputs) == ("showa-s01", {a.episode_id: "va"})


def test_a_season_is_rebuilt_only_when_its_inputs_differ() -> None:
    a = catalogued(scanned(1), fingerprints_version="va")
    other = catalogued(scanned(1, "showb-s01"), fingerprints_version="vb")
    built = {
        "showa-s01": SeasonBuild("showa-s01", T1, {a.episode_id: "va"}, "x"),
        "showb-s01": SeasonBuild("showb-s01", T1, {other.episode_id: "vb"}, "y"),
    }
    assert plan_seasons([a, other], built) == []
    new = catalogued(scanned(2), fingerprints_version="v2")
    (req,) = plan_seasons([a, new, other], built)
    assert req.season == "showa-s01"
    assert req.inputs == {a.episode_id: "va", new.episode_id: "v2"}


def test_a_corrupt_video_without_fingerprints_does_not_trigger_its_season() -> None:
    a = catalogued(scanned(1), fingerprints_version="va")
    bad = catalogued(scanned(2))
    built = {"showa-s01": SeasonBuild("showa-s01", T1, {a.episode_id: "va"}, "x")}
    assert plan_seasons([a, bad], built) == []


def test_removing_every_video_of_a_season_requests_an_empty_build() -> None:
    a = catalogued(scanned(1), fingerprints_version="va", removed_at=T2)
    built = {"showa-s01": SeasonBuild("showa-s01", T1, {a.episode_id: "va"}, "x")}
    (req,) = plan_seasons([a], built)
    assert req.inputs == {}


def test_season_run_keys_change_with_the_shard_generation() -> None:
    a = catalogued(scanned(1), fingerprints_version="va")
    first = plan_seasons([a], {})[0].run_key
    built = {"showa-s01": SeasonBuild("showa-s01", T1, {a.episode_id: "old"}, "x")}
    assert plan_seasons([a], built)[0].run_key != first


# ----------------------------------------------------------------------------------------------
# Storage: every test below runs on both implementations.


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new catalog: a SQLite file, or a fresh database on the local Postgres."""
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "catalog.sqlite")
    database = request.getfixturevalue("postgres_database")
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def test_the_catalog_round_trips_scans_and_builds(catalog_target: str) -> None:
    cat = open_catalog(catalog_target)
    files = [scanned(1), scanned(2)]
    plan = plan_scan(files, {}, video_partitions=set(), season_partitions=set(), now=T0)
    cat.apply_scan(plan, now=T0)
    cat.record_audio("showa-s01e01", sha256="ab" * 32, duration_s=15.0, audio_version="a1")
    cat.record_fingerprints("showa-s01e01", version="f1", at=T1)
    rec = cat.video("showa-s01e01")
    assert rec is not None
    assert (rec.sha256, rec.duration_s, rec.audio_version, rec.fingerprints_version) == (
        "ab" * 32,
        15.0,
        "a1",
        "f1",
    )
    assert rec.found_at == T0 and rec.source_uri.startswith("file:///")

    records = {r.episode_id: r for r in cat.videos(include_removed=True)}
    gone = plan_scan(
        files[:1], records, video_partitions=set(records), season_partitions={"showa-s01"}, now=T2
    )
    cat.apply_scan(gone, now=T2)
    assert [v.episode_id for v in cat.videos()] == ["showa-s01e01"]
    assert cat.video("showa-s01e02").removed_at == T2  # type: ignore[union-attr]

    cat.record_season_build("showa-s01", inputs={"showa-s01e01": "f1"}, shard_version="s1", at=T2)
    assert cat.season_builds() == {
        "showa-s01": SeasonBuild("showa-s01", T2, {"showa-s01e01": "f1"}, "s1")
    }
    assert cat.schema_version() == SCHEMA_VERSION
    # Another process opening the same catalog finds the same rows.
    assert open_catalog(catalog_target).video("showa-s01e01") == rec


def test_two_writers_racing_on_one_new_video_make_one_row_and_the_first_insert_wins(
    catalog_target: str,
) -> None:
    open_catalog(catalog_target).videos()  # created before the race, as a deployment does
    f = scanned(1)
    plans = [
        plan_scan([f], {}, video_partitions=set(), season_partitions=set(), now=f"T{i}")
        for i in range(6)
    ]
    start, errors = threading.Barrier(len(plans)), []

    def write(plan: ScanPlan) -> None:
        try:
            cat = open_catalog(catalog_target)  # its own connections, as another process has
            start.wait(30)
            cat.apply_scan(plan, now=plan.upserts[0].found_at)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    rows = open_catalog(catalog_target).videos(include_removed=True)
    assert [r.episode_id for r in rows] == [f.episode_id]
    # The winner's found_at (its run key) stays: a later writer only repeats the facts.
    assert rows[0].found_at in {f"T{i}" for i in range(6)}
    for plan in plans:
        open_catalog(catalog_target).apply_scan(plan, now="T9")
    assert [r.found_at for r in open_catalog(catalog_target).videos()] == [rows[0].found_at]


def test_a_scan_racing_a_step_loses_nothing_the_step_recorded(catalog_target: str) -> None:
    cat = open_catalog(catalog_target)
    f = scanned(1)
    cat.apply_scan(
        plan_scan([f], {}, video_partitions=set(), season_partitions=set(), now=T0), now=T0
    )
    seen = {r.episode_id: r for r in cat.videos(include_removed=True)}
    # The scan saw the video before its fingerprints were recorded, then found it changed.
    cat.record_fingerprints(f.episode_id, version="f1", at=T1)
    changed = plan_scan([replace(f, size=200)], seen, video_partitions={f.episode_id},
                        season_partitions={"showa-s01"}, now=T2)  # fmt: skip
    assert changed.changed == (f.episode_id,)
    cat.apply_scan(changed, now=T2)
    rec = cat.video(f.episode_id)
    assert rec is not None and (rec.size, rec.fingerprints_version) == (200, "f1")


def test_a_failed_write_leaves_nothing_half_written(catalog_target: str) -> None:
    cat = open_catalog(catalog_target)
    good = plan_scan([scanned(1), scanned(2)], {}, video_partitions=set(), season_partitions=set(),
                     now=T0)  # fmt: skip
    bad = replace(good.upserts[1], title=None)  # NOT NULL: the database refuses the row
    with pytest.raises(Exception, match=r"(?i)null"):
        cat.apply_scan(replace(good, upserts=(good.upserts[0], bad)), now=T0)
    assert cat.videos(include_removed=True) == []


def test_a_catalog_written_by_newer_code_is_refused(catalog_target: str) -> None:
    cat = open_catalog(catalog_target)
    cat.videos()
    cat._update("UPDATE catalog_meta SET value = '99' WHERE key = 'schema_version'", ())
    with pytest.raises(CatalogError, match="schema version 99 is newer"):
        open_catalog(catalog_target).videos()


def test_a_version_1_sqlite_catalog_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with sqlite3.connect(path) as old:  # what the first release wrote
        old.executescript(V1_SCHEMA)
        old.execute("INSERT INTO catalog_meta VALUES ('schema_version', '1')")
        old.execute(
            "INSERT INTO videos VALUES ('showa-s01e01', 'showa-s01', 'Show A', 1, 1, 'a.mp3', "
            "'file:///a.mp3', 'A', 10, 1, ?, ?, NULL, NULL, NULL, 'a1', 'f1', ?)",
            (T0, T0, T1),
        )
    cat = open_catalog(path)
    rec = cat.video("showa-s01e01")
    assert rec is not None and rec.fingerprints_version == "f1" and rec.embeddings_version is None
    cat.record_embeddings("showa-s01e01", version="e1")
    assert cat.video("showa-s01e01").embeddings_version == "e1"  # type: ignore[union-attr]
    assert cat.schema_version() == SCHEMA_VERSION


V1_SCHEMA = """
CREATE TABLE videos (episode_id TEXT PRIMARY KEY, season TEXT NOT NULL, show TEXT NOT NULL,
    season_number INTEGER, episode_number INTEGER, source TEXT NOT NULL, source_uri TEXT NOT NULL,
    title TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, found_at TEXT NOT NULL,
    changed_at TEXT NOT NULL, removed_at TEXT, sha256 TEXT, duration_s REAL, audio_version TEXT,
    fingerprints_version TEXT, fingerprinted_at TEXT);
CREATE INDEX videos_by_season ON videos (season);
CREATE TABLE seasons (season TEXT PRIMARY KEY, built_at TEXT NOT NULL, inputs TEXT NOT NULL,
    shard_version TEXT);
CREATE TABLE catalog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def test_an_unreachable_catalog_database_is_named_without_its_password() -> None:
    port = free_port()  # nothing listens there
    cat = PostgresCatalog(
        f"postgresql://citywok:s3cret-pw@127.0.0.1:{port}/catalog", connect_timeout_s=2
    )
    with pytest.raises(CatalogUnavailableError) as caught:
        cat.videos()
    message = str(caught.value)
    assert f"postgresql://citywok@127.0.0.1:{port}/catalog" in message
    assert "s3cret" not in message and "nothing was written" in message


def test_many_processes_creating_one_postgres_catalog_at_once_agree(
    postgres_database: str,
) -> None:
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{postgres_database}"
    start, errors = threading.Barrier(6), []

    def create() -> None:
        try:
            cat = open_catalog(url)
            start.wait(30)
            cat.videos()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert open_catalog(url).schema_version() == SCHEMA_VERSION


def test_a_season_being_built_gets_no_request_until_its_build_ends() -> None:
    a = catalogued(scanned(1), fingerprints_version="va")
    b = catalogued(scanned(1, "showb-s02"), fingerprints_version="vb")
    assert [r.season for r in plan_seasons([a, b], {}, in_progress={"showa-s01"})] == ["showb-s02"]
    assert [r.season for r in plan_seasons([a, b], {})] == ["showa-s01", "showb-s02"]
