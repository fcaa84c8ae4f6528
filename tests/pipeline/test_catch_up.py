"""The nightly catch-up: missing or failed partitions of each per-video asset, newest first,
capped, orphans skipped, once per cron tick."""

from __future__ import annotations

import datetime
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.automation import automation_settings, choose_newest_known
from citywok_pipeline.catalog import ScanPlan, VideoRecord, open_catalog
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.resources import CatalogResource

from .conftest import sqlite_instance

VIDEO_ASSETS = ("raw_audio", "fingerprints", "transcript", "segment_embeddings")


def record(eid: str, published_day: int) -> VideoRecord:
    ns = int(datetime.datetime(2026, 3, published_day, tzinfo=datetime.UTC).timestamp() * 1e9)
    return VideoRecord(
        episode_id=eid, season="s", show="s", season_number=None, episode_number=None,
        source=f"http://x/{eid}", source_uri=f"http://x/{eid}", title=eid, size=0,
        mtime_ns=ns, found_at="2026-03-01T00:00:00.000000Z", changed_at="2026-03-01T00:00:00.000000Z",
    )  # fmt: skip


def test_the_choice_is_the_newest_known_videos_and_orphans_are_never_chosen() -> None:
    videos = {k: record(k, d) for k, d in [("old", 1), ("mid", 2), ("new", 3)]}
    gone = VideoRecord(**{**record("gone", 4).__dict__, "removed_at": "2026-03-05T00:00:00Z"})
    videos["gone"] = gone
    choice = choose_newest_known(["old", "lost", "new", "mid", "gone"], videos, limit=2)
    assert choice.chosen == ("new", "mid")
    assert choice.deferred == ("old",)
    assert choice.orphans == ("gone", "lost")


def test_malformed_settings_name_the_variable() -> None:
    assert automation_settings({}).catch_up_cron == "0 3 * * *"
    with pytest.raises(ValueError, match="CITYWOK_CATCH_UP_CRON"):
        automation_settings({"CITYWOK_CATCH_UP_CRON": "at three"})
    with pytest.raises(ValueError, match="CITYWOK_CATCH_UP_LIMIT"):
        automation_settings({"CITYWOK_CATCH_UP_LIMIT": "0"})


def _fail(defs: dg.Definitions, instance: dg.DagsterInstance, catalog: Path, eid: str,
          assets: tuple[str, ...]) -> None:  # fmt: skip
    """A real failed run of ``assets`` for ``eid``: its catalog row is marked removed for it."""
    open_catalog(catalog).apply_scan(ScanPlan(removed=(eid,)), now="n")
    job = dg.define_asset_job(f"fail_{len(assets)}", selection=list(assets))
    run = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        .resolve_job_def(job.name)
        .execute_in_process(instance=instance, partition_key=eid, raise_on_error=False)
    )
    assert not run.success
    open_catalog(catalog).apply_scan(ScanPlan(upserts=(record(eid, int(eid[-1])),)), now="n")


def test_the_catch_up_takes_what_each_asset_misses_once_per_cron_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYWOK_CATCH_UP_LIMIT", "3")
    catalog = tmp_path / "catalog.sqlite"
    days = {f"yt-video000000{d}": d for d in (1, 2, 3, 4, 5)}
    open_catalog(catalog).apply_scan(
        ScanPlan(upserts=tuple(record(k, d) for k, d in days.items())), now="n"
    )
    resources = {**resources_for({}), "catalog": CatalogResource(path=str(catalog))}
    defs = build_definitions(resources)
    with sqlite_instance(tmp_path / "dagster") as instance:
        # "Add a partition" in the UI: a partition the catalog does not hold.
        instance.add_dynamic_partitions("videos", [*days, "yt-orphan00001"])
        for asset in VIDEO_ASSETS:  # day 5 is done
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset, partition="yt-video0000005")
            )
        for asset in ("raw_audio", "fingerprints"):  # day 4 has audio and fingerprints ...
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset, partition="yt-video0000004")
            )
        # ... and its transcript failed; day 3's download failed; days 1 and 2 never ran.
        _fail(defs, instance, catalog, "yt-video0000004", ("transcript", "segment_embeddings"))
        _fail(defs, instance, catalog, "yt-video0000003", VIDEO_ASSETS)

        def tick(at: datetime.datetime, cursor=None):  # type: ignore[no-untyped-def]
            return dg.evaluate_automation_conditions(
                defs, instance, evaluation_time=at, cursor=cursor
            )

        night = datetime.datetime(2026, 3, 6, 2, 59, tzinfo=datetime.UTC)
        before = tick(night)
        assert before.total_requested == 0
        after = tick(night + datetime.timedelta(minutes=2), before.cursor)
        requested = {a: after.get_requested_partitions(dg.AssetKey(a)) for a in VIDEO_ASSETS}
        # Newest first, at most 3 of each asset; the orphan and day 5 never.
        assert requested["raw_audio"] == {"yt-video0000003", "yt-video0000002", "yt-video0000001"}
        assert requested["fingerprints"] == requested["raw_audio"]
        assert requested["transcript"] == {"yt-video0000004", "yt-video0000003", "yt-video0000002"}
        assert requested["segment_embeddings"] == requested["transcript"]
        # The next minute is not a cron tick: nothing again until tomorrow night.
        later = tick(night + datetime.timedelta(minutes=3), after.cursor)
        assert later.total_requested == 0


def test_the_catch_up_sensor_emits_backfills_on_the_code_server(tmp_path: Path) -> None:
    defs = build_definitions(
        {**resources_for({}), "catalog": CatalogResource(path=str(tmp_path / "c.sqlite"))}
    )
    sensor = defs.resolve_sensor_def("video_catch_up_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.emit_backfills and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {
        dg.AssetKey(a) for a in VIDEO_ASSETS
    }
