"""A new upload end to end: the feed sensor, yt-dlp's generic extractor downloading from a local
HTTP server (youtube.com is unreachable here), the video's assets, its channel's shard and a new published version."""

from __future__ import annotations

from pathlib import Path

import pytest

from citywok_pipeline.catalog import open_catalog
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.embedded import PassReport, apply_sensor_result, evaluate_sensor
from citywok_pipeline.publishing.versions import read_latest, read_manifest
from citywok_pipeline.resources import YouTubeResource
from citywok_pipeline.snapshot import Snapshot
from tests.youtube.server import Failure, Video, serve_local_youtube

from .conftest import Pipeline

pytestmark = pytest.mark.slow

CHANNEL = "UC" + "n" * 22


def test_a_new_upload_is_downloaded_materialised_and_lands_in_its_channels_shard(
    pipeline: Pipeline, tiny_library_source: Path, tmp_path: Path
) -> None:
    episodes = sorted(tiny_library_source.rglob("*S01E01*"))[:2]
    with serve_local_youtube() as yt:
        yt.add_channel(CHANNEL, "Night Kitchen", [
            Video("kitchen0001", "First", "2026-05-01T00:00:00+00:00", episodes[0]),
            Video("kitchen0002", "Private", "2026-05-02T00:00:00+00:00", episodes[1]),
        ])  # fmt: skip
        yt.fail_media["kitchen0002"] = Failure(404, b"Private video")
        resources = {
            **resources_for({}),  # any resource the fixture does not set yet
            **pipeline.resources,
            "youtube": YouTubeResource(
                channels=CHANNEL, feed_url=yt.feed_base, download_interval_s=0.0,
                state_dir=str(tmp_path / "yt"),
            ),
        }  # fmt: skip
        defs = build_definitions(resources)
        report = PassReport()
        tick = evaluate_sensor(defs, pipeline.instance, "youtube_uploads_sensor")
        apply_sensor_result(defs, pipeline.instance, "youtube_uploads_sensor", tick, report)
        outcomes = {r.partition: r for r in report.runs}
        assert outcomes["yt-kitchen0001"].success, outcomes["yt-kitchen0001"].error
        failed = outcomes["yt-kitchen0002"]
        assert not failed.success
        assert "yt-kitchen0002: cannot download" in (failed.error or "")
        assert "video not found" in (failed.error or "")
        seasons = evaluate_sensor(defs, pipeline.instance, "season_snapshot_sensor")
        apply_sensor_result(defs, pipeline.instance, "season_snapshot_sensor", seasons, report)
    assert not report.runs_of("season_snapshot_job")[0].error
    video = open_catalog(pipeline.catalog_path).video("yt-kitchen0001")
    assert video is not None and video.fingerprints_version and video.duration_s
    assert "youtube kitchen0001" in (tmp_path / "yt" / "download-archive.txt").read_text()
    with Snapshot.open(pipeline.snapshot) as snapshot:
        assert {e.episode_id for e in snapshot.episodes} == {"yt-kitchen0001"}
    # And the shard reaches a new published version.
    published = defs.resolve_job_def("publish_job").execute_in_process(instance=pipeline.instance)
    assert published.success
    bucket = resources["versions"].bucket()
    latest = read_latest(bucket)
    assert latest is not None
    manifest = read_manifest(bucket, latest.version)
    assert [(s.season, s.episodes) for s in manifest.shards] == [(f"yt-{CHANNEL}", 1)]
