"""The sensors' answers, evaluated against a real instance (the runs themselves are not executed)."""

from __future__ import annotations

import datetime
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.definitions import build_definitions
from citywok_pipeline.embedded import PassReport, apply_sensor_result, evaluate_sensor
from citywok_pipeline.resources import SeasonFoldersResource

from .conftest import Pipeline

pytestmark = pytest.mark.slow  # generates the tiny library once per session


def test_new_videos_get_partitions_and_runs_in_one_sensor_result(pipeline: Pipeline) -> None:
    result = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    adds = {
        r.partitions_def_name: set(r.partition_keys)
        for r in result.dynamic_partitions_requests or []
    }
    videos = {r.partition_key for r in result.run_requests or []}
    assert adds["videos"] == videos and len(videos) == 4
    assert adds["seasons"] == {"harbour-lights-s01", "the-night-kitchen-s01"}
    assert all(
        r.run_key and r.run_key.startswith(r.partition_key) for r in result.run_requests or []
    )
    observed = {e.partition for e in result.asset_events or []}
    assert observed == videos
    assert all(e.asset_key == dg.AssetKey("source_media") for e in result.asset_events or [])


def test_pending_videos_are_requested_again_under_the_same_run_keys_until_they_ran(
    pipeline: Pipeline,
) -> None:
    first = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    for request in first.dynamic_partitions_requests or []:
        pipeline.instance.add_dynamic_partitions(
            request.partitions_def_name, list(request.partition_keys)
        )
    # Partitions added, runs not run yet (lost, or still queued): the same keys come back,
    # which the daemon drops if it has them already.
    second = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    assert not second.dynamic_partitions_requests
    assert {r.run_key for r in second.run_requests or []} == {
        r.run_key for r in first.run_requests or []
    }

    report = PassReport()
    apply_sensor_result(pipeline.defs, pipeline.instance, "media_scan_sensor", second, report)
    assert len(report.runs) == 4 and not report.failures
    third = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    assert not third.run_requests and not third.dynamic_partitions_requests
    assert "nothing new" in (third.skip_reason.skip_message or "")  # type: ignore[union-attr]


def test_a_wiped_instance_gets_its_partitions_back_from_the_scan(pipeline: Pipeline) -> None:
    first = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    assert first.run_requests
    # The catalog now knows every video, but the instance has no partition for them.
    again = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    assert {r.partition_key for r in again.run_requests or []} == {
        r.partition_key for r in first.run_requests or []
    }


def test_the_season_sensor_waits_for_fingerprints_then_requests_each_season_once(
    pipeline: Pipeline,
) -> None:
    assert evaluate_sensor(
        pipeline.defs, pipeline.instance, "season_snapshot_sensor"
    ).run_requests in (None, [])
    report = PassReport()
    scan = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    apply_sensor_result(pipeline.defs, pipeline.instance, "media_scan_sensor", scan, report)
    assert not report.failures
    seasons = evaluate_sensor(pipeline.defs, pipeline.instance, "season_snapshot_sensor")
    requests = seasons.run_requests or []
    assert {r.partition_key for r in requests} == {"harbour-lights-s01", "the-night-kitchen-s01"}
    assert all(r.tags["citywok/season"] == r.partition_key for r in requests)
    # Until a build happens, the same request (same run key) comes back: the daemon dedupes it.
    again = (
        evaluate_sensor(pipeline.defs, pipeline.instance, "season_snapshot_sensor").run_requests
        or []
    )
    assert {r.run_key for r in again} == {r.run_key for r in requests}


def test_a_missing_media_root_is_skipped_with_the_reason(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    resources = {
        **pipeline.resources,
        "media": SeasonFoldersResource(root=str(tmp_path / "nowhere")),
    }
    defs = build_definitions(resources)
    result = evaluate_sensor(defs, pipeline.instance, "media_scan_sensor")
    assert not result.run_requests
    assert "media root is not a directory" in (result.skip_reason.skip_message or "")  # type: ignore[union-attr]


def test_the_backfill_schedule_requests_videos_never_fingerprinted(pipeline: Pipeline) -> None:
    pipeline.instance.add_dynamic_partitions(
        "videos", ["harbour-lights-s01e01", "harbour-lights-s01e02"]
    )
    schedule = pipeline.defs.resolve_schedule_def("video_backfill_schedule")
    when = datetime.datetime(2026, 1, 1, 0, 17, tzinfo=datetime.UTC)
    with dg.build_schedule_context(
        instance=pipeline.instance, scheduled_execution_time=when, resources=pipeline.resources
    ) as context:
        requests = list(schedule(context))
    assert {r.partition_key for r in requests} == {"harbour-lights-s01e01", "harbour-lights-s01e02"}  # type: ignore[union-attr]
