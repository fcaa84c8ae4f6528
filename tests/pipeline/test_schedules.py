"""The nightly backfill: only missing or failed video partitions, newest first, capped."""

from __future__ import annotations

import datetime
from pathlib import Path

import dagster as dg

from citywok_pipeline.catalog import Catalog, ScanPlan, VideoRecord
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.resources import CatalogResource
from citywok_pipeline.sensors.schedules import plan_backfill

from .conftest import sqlite_instance


def record(eid: str, published_day: int) -> VideoRecord:
    ns = int(datetime.datetime(2026, 3, published_day, tzinfo=datetime.UTC).timestamp() * 1e9)
    return VideoRecord(
        episode_id=eid, season="s", show="s", season_number=None, episode_number=None,
        source=f"http://x/{eid}", source_uri=f"http://x/{eid}", title=eid, size=0,
        mtime_ns=ns, found_at="2026-03-01T00:00:00.000000Z", changed_at="2026-03-01T00:00:00.000000Z",
    )  # fmt: skip


def test_the_plan_takes_missing_and_failed_newest_first_and_unknown_videos_last() -> None:
    videos = {k: record(k, d) for k, d in [("old", 1), ("mid", 2), ("new", 3), ("ok", 4)]}
    keys = ["lost", "old", "mid", "new", "ok"]
    plan = plan_backfill(keys, failed={"mid"}, done={"ok", "mid"}, videos=videos)
    assert plan == ["new", "mid", "old", "lost"]
    assert plan_backfill(keys, failed=set(), done=set(), videos=videos, limit=2) == ["ok", "new"]


def test_the_nightly_schedule_requests_only_missing_and_failed_partitions_newest_first(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog.sqlite"
    Catalog(catalog).apply_scan(
        ScanPlan(upserts=tuple(record(f"yt-video{d:07d}", d) for d in (1, 2, 3, 4))), now="n"
    )
    resources = {**resources_for({}), "catalog": CatalogResource(path=str(catalog))}
    defs = build_definitions(resources)
    with sqlite_instance(tmp_path / "dagster") as instance:
        instance.add_dynamic_partitions("videos", [f"yt-video{d:07d}" for d in (1, 2, 3, 4)])
        # Day 4 is done; day 3 failed for real (its run finds no catalog row: the row is
        # removed just for that run); days 1 and 2 were never run.
        instance.report_runless_asset_event(
            dg.AssetMaterialization("fingerprints", partition="yt-video0000004")
        )
        Catalog(catalog).apply_scan(ScanPlan(removed=("yt-video0000003",)), now="n")
        run = defs.resolve_job_def("video_job").execute_in_process(
            instance=instance, partition_key="yt-video0000003", raise_on_error=False
        )
        assert not run.success
        Catalog(catalog).apply_scan(ScanPlan(upserts=(record("yt-video0000003", 3),)), now="n")

        schedule = defs.resolve_schedule_def("video_backfill_schedule")
        assert schedule.cron_schedule == "0 3 * * *"
        when = datetime.datetime(2026, 3, 5, 3, 0, tzinfo=datetime.UTC)
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, resources=defs.resources
        ) as context:
            requests = list(schedule(context))
    assert [r.partition_key for r in requests] == [  # type: ignore[union-attr]
        "yt-video0000003",
        "yt-video0000002",
        "yt-video0000001",
    ]
    assert all(r.run_key.endswith(when.isoformat()) for r in requests)  # type: ignore[union-attr]
