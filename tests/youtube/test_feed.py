"""Channel feeds from a local HTTP server in YouTube's Atom format (youtube.com is unreachable here)."""

from __future__ import annotations

import pytest

from citywok_pipeline.youtube import (
    FeedError,
    FeedRateLimitedError,
    FeedUnavailableError,
    feed_url,
    fetch_feed,
    parse_channel_ids,
    parse_feed,
)

from .server import Failure, LocalYouTube, Video

CHANNEL = "UC" + "a" * 22


def videos(n: int) -> list[Video]:
    return [
        Video(f"vid{i:08d}", f"Episode {i}", f"2026-01-{i + 1:02d}T10:00:00+00:00")
        for i in range(n)
    ]


def test_channel_ids_are_read_in_order_once_and_a_handle_is_refused_by_name() -> None:
    other = "UC" + "b" * 22
    assert parse_channel_ids(f" {CHANNEL}, {other},{CHANNEL},") == [CHANNEL, other]
    with pytest.raises(ValueError, match="'@somechannel' is not 'UC'"):
        parse_channel_ids(f"{CHANNEL},@somechannel")


def test_a_feed_lists_its_uploads_newest_first_with_their_links(youtube: LocalYouTube) -> None:
    youtube.add_channel(
        CHANNEL,
        "Cooking Channel",
        [*videos(3), Video("short000001", "A short", "2026-02-01T00:00:00+00:00", short=True)],
    )
    fetched = fetch_feed(feed_url(youtube.feed_base, CHANNEL))
    assert fetched.feed is not None and fetched.etag
    feed = fetched.feed
    assert feed.channel_id == CHANNEL and feed.title == "Cooking Channel"
    assert [u.video_id for u in feed.uploads] == [
        "short000001",
        "vid00000002",
        "vid00000001",
        "vid00000000",
    ]
    assert feed.uploads[0].is_short and not feed.uploads[1].is_short
    assert feed.uploads[1].url == f"{youtube.base}/media/vid00000002.m4a"
    assert feed.uploads[1].episode_id == "yt-vid00000002"
    assert feed.uploads[1].season == f"yt-{CHANNEL}"


def test_an_unchanged_feed_answers_304_to_its_etag_and_a_changed_one_the_new_body(
    youtube: LocalYouTube,
) -> None:
    youtube.add_channel(CHANNEL, "C", videos(2))
    url = feed_url(youtube.feed_base, CHANNEL)
    first = fetch_feed(url)
    again = fetch_feed(url, etag=first.etag)
    assert again.not_modified and again.etag == first.etag
    assert youtube.feed_requests()[-1][1:] == (first.etag, 304)
    youtube.channels[CHANNEL][1].append(Video("vid00000009", "New", "2026-03-01T00:00:00+00:00"))
    changed = fetch_feed(url, etag=first.etag)
    assert changed.feed is not None and changed.etag != first.etag
    assert changed.feed.uploads[0].video_id == "vid00000009"


def test_a_500_is_unavailable_and_a_429_is_rate_limited_with_its_retry_after(
    youtube: LocalYouTube,
) -> None:
    youtube.add_channel(CHANNEL, "C", videos(1))
    url = feed_url(youtube.feed_base, CHANNEL)
    youtube.fail_feed[CHANNEL] = Failure(500, b"oops")
    with pytest.raises(FeedUnavailableError, match="HTTP 500") as exc:
        fetch_feed(url)
    assert not isinstance(exc.value, FeedRateLimitedError)
    youtube.fail_feed[CHANNEL] = Failure(429, b"slow down", {"Retry-After": "120"})
    with pytest.raises(FeedRateLimitedError) as limited:
        fetch_feed(url)
    assert limited.value.retry_after_s == 120.0


def test_a_bot_check_page_is_rate_limiting_not_a_malformed_feed(youtube: LocalYouTube) -> None:
    youtube.add_channel(CHANNEL, "C", videos(1))
    youtube.fail_feed[CHANNEL] = Failure(200, b"<html>Sign in to confirm you're not a bot</html>")
    with pytest.raises(FeedRateLimitedError, match="not a bot"):
        fetch_feed(feed_url(youtube.feed_base, CHANNEL))


def test_a_malformed_feed_is_a_feed_error_naming_the_feed() -> None:
    with pytest.raises(FeedError, match="http://x/feed: not XML"):
        parse_feed(b"<feed><entry>", source="http://x/feed")
    with pytest.raises(FeedError, match="not an Atom feed"):
        parse_feed(b"<rss/>", source="f")
    bad_id = (
        b'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:yt="http://www.youtube.com/xml/schemas/2015">'
        b"<yt:channelId>UCx</yt:channelId><entry><yt:videoId>../etc</yt:videoId></entry></feed>"
    )
    with pytest.raises(FeedError, match="entry 1 has no valid yt:videoId"):
        parse_feed(bad_id, source="f")


def test_a_feed_nobody_serves_is_unavailable() -> None:
    with pytest.raises(FeedUnavailableError, match="no answer"):
        fetch_feed("http://127.0.0.1:9/feeds/videos.xml?channel_id=x", timeout_s=2)
