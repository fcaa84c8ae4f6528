"""The catalog and its decisions, without Dagster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from citywok_pipeline.catalog import (
    Catalog,
    ScannedFile,
    SeasonBuild,
    VideoRecord,
    plan_scan,
    plan_seasons,
)

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


def test_the_catalog_file_round_trips_scans_and_builds(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "sub" / "catalog.sqlite")
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
