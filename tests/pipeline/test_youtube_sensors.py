"""The YouTube sensors against a real local HTTP server in YouTube's formats (youtube.com is
unreachable from here), a real SQLite instance and catalog; yt-dlp's generic extractor lists
and downloads from that server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.catalog import open_catalog
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.embedded import evaluate_sensor
from citywok_pipeline.resources import ArtefactStore, CatalogResource, YouTubeResource
from citywok_pipeline.sensors.youtube import FeedCursor
from tests.youtube.server import Failure, LocalYouTube, Video, serve_local_youtube

from .conftest import sqlite_instance

CHANNEL = "UC" + "k" * 22
SEASON = f"yt-{CHANNEL}"


def video(i: int, media: Path | None = None, **kw: object) -> Video:
    return Video(
        f"kitchen{i:04d}", f"Kitchen {i}", f"2026-05-{i + 1:02d}T12:00:00+00:00", media, **kw
    )  # type: ignore[arg-type]


@pytest.fixture
def youtube() -> Iterator[LocalYouTube]:
    with serve_local_youtube() as server:
        server.add_channel(CHANNEL, "Night Kitchen", [video(1), video(2)])
        yield server


class Tick:
    """Evaluates a sensor as the daemon would and applies its partitions and cursor."""

    def __init__(self, tmp_path: Path, youtube: LocalYouTube, **options: object) -> None:
        self.youtube = youtube
        self.catalog_path = tmp_path / "catalog.sqlite"
        self.instance = sqlite_instance(tmp_path / "dagster")
        self.resources = {
            **resources_for({}),
            "catalog": CatalogResource(path=str(self.catalog_path)),
            "artefacts": ArtefactStore(bucket_url=(tmp_path / "bucket").as_uri()),
            "youtube": YouTubeResource(
                channels=CHANNEL, feed_url=youtube.feed_base,
                listing_url=youtube.listing_template, state_dir=str(tmp_path / "yt"),
                **options,  # type: ignore[arg-type]
            ),
        }  # fmt: skip
        self.cursor: str | None = None

    def __call__(self, name: str = "youtube_uploads_sensor") -> dg.SensorResult:
        defs = build_definitions(self.resources)
        result = evaluate_sensor(defs, self.instance, name, cursor=self.cursor)
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, dg.AddDynamicPartitionsRequest), "nothing is ever deleted"
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        if name == "youtube_uploads_sensor":
            self.cursor = result.cursor
        return result

    def list_channels(self) -> dg.ExecuteInProcessResult:
        """Run youtube_listing_job, as its schedule would."""
        job = build_definitions(self.resources).resolve_job_def("youtube_listing_job")
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    @property
    def videos(self) -> list[str]:
        return self.instance.get_dynamic_partitions("videos")


@pytest.fixture
def tick(tmp_path: Path, youtube: LocalYouTube) -> Iterator[Tick]:
    t = Tick(tmp_path, youtube)
    yield t
    t.instance.dispose()


def requested(result: dg.SensorResult) -> list[str]:
    return [r.partition_key or "" for r in result.run_requests or []]


def test_the_first_tick_adds_each_upload_and_its_channel_season_and_requests_their_runs(
    tick: Tick, youtube: LocalYouTube
) -> None:
    result = tick()
    assert requested(result) == ["yt-kitchen0002", "yt-kitchen0001"]  # newest first
    assert sorted(tick.videos) == ["yt-kitchen0001", "yt-kitchen0002"]
    assert tick.instance.get_dynamic_partitions("seasons") == [SEASON]
    assert all(
        r.run_key and r.run_key.startswith(r.partition_key or "?")
        for r in result.run_requests or []
    )
    record = open_catalog(tick.catalog_path).video("yt-kitchen0002")
    assert record is not None and record.season == SEASON and record.show == "Night Kitchen"
    assert record.source_uri == f"{youtube.base}/media/kitchen0002.m4a"
    assert FeedCursor.load(tick.cursor).etags[CHANNEL]


def test_an_unchanged_feed_is_asked_with_its_etag_answers_304_and_requests_nothing(
    tick: Tick, youtube: LocalYouTube
) -> None:
    tick()
    etag = FeedCursor.load(tick.cursor).etags[CHANNEL]
    again = tick()
    assert youtube.feed_requests()[-1][1:] == (etag, 304)
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert "no new uploads" in (again.skip_reason.skip_message or "")  # type: ignore[union-attr]


def test_a_new_upload_gets_a_partition_and_a_run(tick: Tick, youtube: LocalYouTube) -> None:
    tick()
    youtube.channels[CHANNEL][1].append(video(3))
    result = tick()
    assert requested(result) == ["yt-kitchen0003"]
    assert "yt-kitchen0003" in tick.videos


@pytest.mark.parametrize(
    "failure",
    [Failure(500, b"backend error"), Failure(200, b"<feed><entry>"), Failure(200, b"<html>oops</html>")],
    ids=["http-500", "truncated-xml", "not-a-feed"],
)  # fmt: skip
def test_a_failing_or_malformed_feed_neither_crashes_the_tick_nor_loses_the_cursor(
    tick: Tick, youtube: LocalYouTube, failure: Failure
) -> None:
    tick()
    before = tick.cursor
    youtube.fail_feed[CHANNEL] = failure
    youtube.channels[CHANNEL][1].append(video(3))
    result = tick()
    assert not result.run_requests
    assert tick.cursor == before
    assert "feed unreadable" in (result.skip_reason.skip_message or "")  # type: ignore[union-attr]
    del youtube.fail_feed[CHANNEL]
    assert requested(tick()) == ["yt-kitchen0003"]


def test_a_rate_limited_feed_is_left_alone_until_its_retry_after(
    tick: Tick, youtube: LocalYouTube
) -> None:
    youtube.fail_feed[CHANNEL] = Failure(429, b"", {"Retry-After": "3600"})
    assert "rate limited" in (tick().skip_reason.skip_message or "")  # type: ignore[union-attr]
    asked = len(youtube.feed_requests())
    del youtube.fail_feed[CHANNEL]
    assert "backing off" in (tick().skip_reason.skip_message or "")  # type: ignore[union-attr]
    assert len(youtube.feed_requests()) == asked


def test_a_video_that_drops_off_the_feed_keeps_its_partition_and_is_not_requested_again(
    tick: Tick, youtube: LocalYouTube
) -> None:
    tick()
    youtube.channels[CHANNEL][1].pop(0)  # kitchen0001 leaves the feed (it lists only 15)
    result = tick()
    assert not result.run_requests and not result.dynamic_partitions_requests
    assert sorted(tick.videos) == ["yt-kitchen0001", "yt-kitchen0002"]


def test_a_reset_cursor_re_reads_the_feed_without_re_ingesting(tick: Tick) -> None:
    tick()
    tick.cursor = None
    result = tick()
    assert not result.run_requests and not result.dynamic_partitions_requests


def test_shorts_are_skipped_and_at_most_max_new_per_tick_the_rest_on_the_next_tick(
    tmp_path: Path, youtube: LocalYouTube
) -> None:
    youtube.channels[CHANNEL][1].extend([video(3), video(4, short=True), video(5)])
    tick = Tick(tmp_path, youtube, max_new_per_tick=2)
    try:
        assert requested(tick()) == ["yt-kitchen0005", "yt-kitchen0003"]
        # The ETag was not kept: the next tick reads the whole feed, not a 304.
        assert requested(tick()) == ["yt-kitchen0002", "yt-kitchen0001"]
        assert "yt-kitchen0004" not in tick.videos
        assert not tick().run_requests
    finally:
        tick.instance.dispose()


def test_no_configured_channel_skips_with_the_variable_to_set(tmp_path: Path) -> None:
    with sqlite_instance(tmp_path / "d") as instance:
        resources = {**resources_for({}), "catalog": CatalogResource(path=str(tmp_path / "c"))}
        defs = build_definitions(resources)
        result = evaluate_sensor(defs, instance, "youtube_uploads_sensor")
    assert "CITYWOK_YOUTUBE_CHANNELS" in (result.skip_reason.skip_message or "")  # type: ignore[union-attr]


def test_the_channel_sync_finds_what_the_feed_missed_and_runs_only_the_newest_few(
    tmp_path: Path, youtube: LocalYouTube
) -> None:
    youtube.channels[CHANNEL][1].extend(video(i) for i in range(3, 20))  # 19 uploads, feed shows 15
    tick = Tick(tmp_path, youtube, max_new_per_tick=15)
    try:
        assert len(requested(tick())) == 15
        skipped = tick("youtube_channel_sync_sensor")
        assert "not listed yet" in (skipped.skip_reason.skip_message or "")  # type: ignore[union-attr]
        listing = tick.list_channels()
        assert listing.success
        [materialised] = listing.get_asset_materialization_events()
        assert materialised.materialization.metadata["videos"] == dg.IntMetadataValue(19)
        result = tick("youtube_channel_sync_sensor")
        # The 4 oldest were never in the feed: partitions for all, runs for them (cap 15).
        assert requested(result) == [
            "yt-kitchen0004",
            "yt-kitchen0003",
            "yt-kitchen0002",
            "yt-kitchen0001",
        ]
        assert len(tick.videos) == 19
        assert not tick("youtube_channel_sync_sensor").dynamic_partitions_requests
    finally:
        tick.instance.dispose()


def test_a_failed_listing_keeps_the_last_good_one_and_fails_the_job_with_the_reason(
    tmp_path: Path, youtube: LocalYouTube
) -> None:
    tick = Tick(tmp_path, youtube)
    try:
        assert tick.list_channels().success
        stored = sorted((tmp_path / "bucket" / "artefacts" / "youtube" / "listings").iterdir())
        before = [p.read_bytes() for p in stored]
        youtube.channels[CHANNEL][1].append(video(3))
        youtube.fail_listing[CHANNEL] = Failure(500, b"internal error")
        failed = tick.list_channels()
        assert not failed.success
        [failure] = [e for e in failed.all_events if e.is_step_failure]
        description = failure.step_failure_data.user_failure_data.description or ""
        assert CHANNEL in description and "500" in description
        assert [p.read_bytes() for p in stored] == before  # the last good listing stays
        # The sensor goes on from it: the two videos it lists, not the third.
        result = tick("youtube_channel_sync_sensor")
        assert requested(result) == ["yt-kitchen0002", "yt-kitchen0001"]
    finally:
        tick.instance.dispose()


def test_a_tampered_listing_is_refused_with_its_name_and_nothing_is_ingested(
    tmp_path: Path, youtube: LocalYouTube
) -> None:
    tick = Tick(tmp_path, youtube)
    try:
        assert tick.list_channels().success
        [path] = (tmp_path / "bucket" / "artefacts" / "youtube" / "listings").iterdir()
        path.write_bytes(path.read_bytes().replace(b'"https?', b"").replace(b"http://", b"file://"))
        result = tick("youtube_channel_sync_sensor")
        assert not result.run_requests and not result.dynamic_partitions_requests
        assert "listing unusable" in (result.skip_reason.skip_message or "")  # type: ignore[union-attr]
    finally:
        tick.instance.dispose()
