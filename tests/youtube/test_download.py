"""Real yt-dlp (its generic extractor) against the local server: youtube.com is unreachable here."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from pathlib import Path

import pytest

from citywok_pipeline.youtube import (
    DownloadArchive,
    DownloadError,
    RateLimitedError,
    Throttle,
    VideoUnavailableError,
    channel_listing_url,
    classify_download_error,
    download_audio,
    list_channel,
)

from .server import Failure, LocalYouTube, Video

CHANNEL = "UC" + "c" * 22


@pytest.fixture
def served(youtube: LocalYouTube, tone_m4a: Path) -> LocalYouTube:
    youtube.add_channel(CHANNEL, "Tones", [
        Video("tone0000001", "First tone", "2026-01-01T00:00:00+00:00", tone_m4a),
        Video("tone0000002", "Second tone", "2026-01-02T00:00:00+00:00", tone_m4a),
        Video("short000001", "A short", "2026-01-03T00:00:00+00:00", tone_m4a, short=True),
    ])  # fmt: skip
    return youtube


def test_best_audio_is_downloaded_as_served(
    served: LocalYouTube, tmp_path: Path, tone_m4a: Path
) -> None:
    got = download_audio(f"{served.base}/media/tone0000001.m4a", tmp_path)
    assert got.path.read_bytes() == tone_m4a.read_bytes()
    assert got.video_id == "tone0000001" and got.extractor == "Generic"


def test_a_missing_video_fails_as_unavailable_with_the_reason(
    served: LocalYouTube, tmp_path: Path
) -> None:
    with pytest.raises(VideoUnavailableError) as exc:
        download_audio(f"{served.base}/media/gone0000000.m4a", tmp_path)
    assert exc.value.reason == "video not found (removed or never existed)"


@pytest.mark.parametrize("status", [429, 403])
def test_rate_limiting_answers_are_rate_limited_not_unavailable(
    served: LocalYouTube, tmp_path: Path, status: int
) -> None:
    served.fail_media["tone0000001"] = Failure(status, b"slow down")
    with pytest.raises(RateLimitedError):
        download_audio(f"{served.base}/media/tone0000001.m4a", tmp_path)


@pytest.mark.parametrize(
    ("message", "kind", "reason"),
    [
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", VideoUnavailableError, "private video"),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", VideoUnavailableError, "removed video"),
        ("ERROR: [youtube] abc: The uploader has not made this video available in your country", VideoUnavailableError, "blocked in this region"),
        ("ERROR: [youtube] abc: Join this channel to get access to members-only content", VideoUnavailableError, "members-only video"),
        ("ERROR: [youtube] abc: This live event will begin in 3 hours.", VideoUnavailableError, "a live stream or premiere that has not ended"),
        ("ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot.", RateLimitedError, "YouTube asks to confirm this is not a bot"),
        ("ERROR: unable to download video data: HTTP Error 429: Too Many Requests", RateLimitedError, "HTTP 429 Too Many Requests"),
        ("ERROR: [generic] Connection reset by peer", DownloadError, "[generic] Connection reset by peer"),
    ],
)  # fmt: skip
def test_yt_dlp_messages_are_classified_with_a_clear_reason(
    message: str, kind: type[DownloadError], reason: str
) -> None:
    error = classify_download_error("u", message)
    assert type(error) is kind and error.reason == reason


def test_the_archive_uses_yt_dlps_format_and_records_a_video_once(tmp_path: Path) -> None:
    archive = DownloadArchive(tmp_path / "archive.txt")
    assert "abc" not in archive
    archive.add("abc")
    archive.add("abc")
    archive.add("def")
    assert archive.path.read_text() == "youtube abc\nyoutube def\n"
    assert "abc" in archive


def _wait_and_stamp(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    Throttle(path, 0.5).wait()
    out.put(time.time())


def test_the_throttle_spaces_downloads_started_by_separate_processes(tmp_path: Path) -> None:
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [
        multiprocessing.Process(target=_wait_and_stamp, args=(str(tmp_path / "t"), queue))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    starts = sorted(queue.get(timeout=5) for _ in procs)
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(starts))


def test_the_channel_listing_names_every_video_newest_first(served: LocalYouTube) -> None:
    uploads = list_channel(
        channel_listing_url(CHANNEL, served.listing_template), channel_id=CHANNEL
    )
    assert [u.video_id for u in uploads] == ["tone0000002", "tone0000001"]
    assert uploads[0].url == f"{served.base}/media/tone0000002.m4a"
    assert uploads[0].season == f"yt-{CHANNEL}" and uploads[0].title == "Second tone"


def test_a_listing_template_without_the_channel_field_is_refused() -> None:
    with pytest.raises(ValueError, match=r"has no \{channel_id\} field"):
        channel_listing_url(CHANNEL, "http://x/videos")
