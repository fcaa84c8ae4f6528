"""Publishing on its own after shards change (debounced), the freshness check that says when the
served version is behind, and the alert for each failed run (to a webhook served here)."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import pytest

from citywok_pipeline.automation import automation_settings
from citywok_pipeline.automation.publish import lag_evaluation, publish_lag
from citywok_pipeline.catalog import ScanPlan, open_catalog
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.embedded import evaluate_sensor
from citywok_pipeline.resources import CatalogResource

from .conftest import sqlite_instance
from .test_catch_up import record

SEASONS = ("harbour-lights-s01", "the-night-kitchen-s01")


@pytest.fixture
def defs(tmp_path: Path) -> dg.Definitions:
    return build_definitions(
        {**resources_for({}), "catalog": CatalogResource(path=str(tmp_path / "catalog.sqlite"))}
    )


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with sqlite_instance(tmp_path / "dagster") as instance:
        instance.add_dynamic_partitions("seasons", list(SEASONS))
        yield instance


def shard_built(instance: dg.DagsterInstance, season: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("season_snapshot", partition=season)
    )


def published(instance: dg.DagsterInstance, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("published_version", metadata={"version": version})
    )


def test_the_publish_interval_is_checked() -> None:
    assert automation_settings({}).publish_every_minutes == 10
    with pytest.raises(ValueError, match="CITYWOK_PUBLISH_EVERY_MINUTES"):
        automation_settings({"CITYWOK_PUBLISH_EVERY_MINUTES": "0"})


def test_shards_changing_publish_at_most_once_per_interval_and_never_without_a_change(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    key = dg.AssetKey("published_version")
    selection = dg.AssetSelection.assets(key)
    # The throttle compares with when the last publish happened: evaluate around real time.
    now = datetime.datetime.now(datetime.UTC)

    def tick(minutes: float, cursor=None):  # type: ignore[no-untyped-def]
        return dg.evaluate_automation_conditions(
            defs, instance, asset_selection=selection, cursor=cursor,
            evaluation_time=now + datetime.timedelta(minutes=minutes),
        )  # fmt: skip

    published(instance, "v1")
    first = tick(0)
    assert first.get_num_requested(key) == 0
    quiet = tick(30, first.cursor)  # long after the last publish, but no shard changed
    assert quiet.get_num_requested(key) == 0
    shard_built(instance, SEASONS[0])
    publish = tick(31, quiet.cursor)  # the last publish was long ago: at once
    assert publish.get_requested_partitions(key) == {None}
    published(instance, "v2")  # the publish ran (its materialisation happens now)
    shard_built(instance, SEASONS[1])  # a rebuild right after: not within 10 minutes of it
    held = tick(5, publish.cursor)
    assert held.get_num_requested(key) == 0
    again = tick(11, held.cursor)
    assert again.get_num_requested(key) == 1
    published(instance, "v3")  # it ran: nothing newer to publish, and too soon anyway
    done = tick(12, again.cursor)
    assert done.get_num_requested(key) == 0


def test_the_freshness_check_fails_when_a_rebuilt_shard_waits_past_the_limit(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    published(instance, "v1")
    assert lag_evaluation(publish_lag(instance), 1800).passed
    shard_built(instance, SEASONS[0])
    built = publish_lag(instance)
    assert built.version == "v1" and built.waiting_season == SEASONS[0]
    soon = publish_lag(instance, now=built.now + 600)
    late = publish_lag(instance, now=built.now + 2400)
    assert lag_evaluation(soon, 1800).passed
    failing = lag_evaluation(late, 1800)
    assert not failing.passed and SEASONS[0] in (failing.description or "")
    assert failing.metadata["behind_s"].value >= 2399  # type: ignore[attr-defined]

    # The sensor reports the check's result when it changes, not on every tick.
    reported = evaluate_sensor(defs, instance, "published_version_freshness_sensor")
    [evaluation] = reported.asset_events
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    assert evaluation.check_name == "published_version_is_current" and evaluation.passed
    same = evaluate_sensor(
        defs, instance, "published_version_freshness_sensor", cursor=reported.cursor
    )
    assert not same.asset_events
    published(instance, "v2")
    moved = evaluate_sensor(
        defs, instance, "published_version_freshness_sensor", cursor=reported.cursor
    )
    assert len(moved.asset_events) == 1


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_run_is_logged_and_posted_with_its_asset_and_partition(
    tmp_path: Path, webhook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYWOK_ALERT_WEBHOOK", webhook)
    catalog = tmp_path / "catalog.sqlite"
    # A removed video: its raw_audio step fails saying so.
    open_catalog(catalog).apply_scan(ScanPlan(upserts=(record("yt-video0000001", 1),)), now="n")
    open_catalog(catalog).apply_scan(ScanPlan(removed=("yt-video0000001",)), now="n")
    resources = {**resources_for(dict(CITYWOK_ALERT_WEBHOOK=webhook)),
                 "catalog": CatalogResource(path=str(catalog))}  # fmt: skip
    defs = build_definitions(resources)
    with sqlite_instance(tmp_path / "dagster") as instance:
        instance.add_dynamic_partitions("videos", ["yt-video0000001"])
        run = defs.resolve_job_def("video_job").execute_in_process(
            instance=instance, partition_key="yt-video0000001", raise_on_error=False
        )
        assert not run.success
        [logged] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure = logged.dagster_event
        assert failure is not None
        sensor = defs.resolve_sensor_def("run_failure_alert_sensor")
        with dg.build_resources({"alerts": resources["alerts"]}) as built:
            context = dg.build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=failure,
                dagster_instance=instance,
                dagster_run=run.dagster_run,
                resources={"alerts": built.alerts},
            )
            sensor(context.for_run_failure())  # type: ignore[operator]
    [alert] = Hook.received
    assert alert["run_id"] == run.run_id and alert["job"] == "video_job"
    assert alert["assets"] == ["raw_audio"] and alert["partition"] == "yt-video0000001"
    assert "was removed" in alert["reason"]
