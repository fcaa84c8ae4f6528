"""The sensors' answers, evaluated against a real instance (the runs themselves are not executed)."""

from __future__ import annotations

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


def test_an_orphan_partition_is_skipped_by_its_run_and_deleted_by_the_scan(
    pipeline: Pipeline,
) -> None:
    pipeline.run()
    # What "Add a partition" in a launch dialog does: a partition no catalog record backs.
    pipeline.instance.add_dynamic_partitions("videos", ["made-by-hand"])
    run = pipeline.defs.resolve_job_def("video_job").execute_in_process(
        instance=pipeline.instance, partition_key="made-by-hand", raise_on_error=False
    )
    assert run.success, "an orphan's run must not fail (it would turn the asset's status red)"
    assert not run.get_asset_materialization_events()
    logged = [e.user_message for e in pipeline.instance.all_logs(run.run_id)]
    assert any("orphan partition" in m for m in logged)
    status = pipeline.instance.get_status_by_partition(
        dg.AssetKey("raw_audio"), ["made-by-hand"], dg.DynamicPartitionsDefinition(name="videos")
    )
    assert (status or {}).get("made-by-hand") != dg.AssetPartitionStatus.FAILED

    result = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    deletes = [
        r for r in result.dynamic_partitions_requests or []
        if isinstance(r, dg.DeleteDynamicPartitionsRequest)
    ]  # fmt: skip
    assert [list(r.partition_keys) for r in deletes] == [["made-by-hand"]]
    assert not result.run_requests


def test_no_season_build_is_requested_while_one_is_queued_and_it_is_requested_after(
    pipeline: Pipeline,
) -> None:
    report = PassReport()
    scan = evaluate_sensor(pipeline.defs, pipeline.instance, "media_scan_sensor")
    apply_sensor_result(pipeline.defs, pipeline.instance, "media_scan_sensor", scan, report)
    assert not report.failures
    # A build of one season queued (by the sensor, as the daemon would launch it) and one of
    # the other launched by hand from the UI (only the partition tag): neither is requested.
    job = pipeline.defs.resolve_job_def("season_snapshot_job")
    # (NOT_STARTED: a QUEUED run needs a code location origin, which a test instance lacks.)
    queued = pipeline.instance.create_run_for_job(
        job_def=job, tags={"citywok/season": "harbour-lights-s01"},
        status=dg.DagsterRunStatus.NOT_STARTED,
    )  # fmt: skip
    by_hand = pipeline.instance.create_run_for_job(
        job_def=job, tags={"dagster/partition": "the-night-kitchen-s01"},
        asset_selection=frozenset({dg.AssetKey("season_snapshot")}),
        status=dg.DagsterRunStatus.STARTED,
    )  # fmt: skip
    waiting = evaluate_sensor(pipeline.defs, pipeline.instance, "season_snapshot_sensor")
    assert not waiting.run_requests
    assert "2 being built" in str(waiting.skip_reason)
    # Once they end (here without building anything), the inputs still differ: requested again.
    pipeline.instance.report_run_failed(queued)
    pipeline.instance.report_run_canceled(by_hand)
    after = evaluate_sensor(pipeline.defs, pipeline.instance, "season_snapshot_sensor")
    assert {r.partition_key for r in after.run_requests or []} == {
        "harbour-lights-s01",
        "the-night-kitchen-s01",
    }
