"""YouTube channels as a media source: feeds, listings and audio downloads (see ``citywok_pipeline.youtube``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..settings import citywok_home
from ..youtube import (
    DEFAULT_FEED_URL,
    DownloadArchive,
    FeedFetch,
    Throttle,
    Upload,
    UploadOptions,
    channel_listing_url,
    download_audio,
    feed_url,
    fetch_feed,
    list_channel,
    parse_channel_ids,
)
from ..youtube.download import DownloadedAudio
from ..youtube.listing import DEFAULT_LISTING_URL


class YouTubeResource(dg.ConfigurableResource):
    """Channels by id (a season each), their feeds and listings, and yt-dlp downloads."""

    channels: str = Field(
        default="", description="Comma-separated channel ids (CITYWOK_YOUTUBE_CHANNELS)."
    )
    feed_url: str = Field(
        default=DEFAULT_FEED_URL, description="The feed base (CITYWOK_YOUTUBE_FEED_URL)."
    )
    listing_url: str = Field(
        default=DEFAULT_LISTING_URL,
        description="A channel's full listing, with a {channel_id} field (CITYWOK_YOUTUBE_LISTING_URL).",
    )
    skip_shorts: bool = True
    skip_live: bool = True
    max_new_per_tick: int = Field(default=10, description="New videos requested per sensor tick.")
    download_interval_s: float = Field(
        default=6.0, description="Pause between two downloads on one machine (yt-dlp: 5-10 s)."
    )
    rate_limit_backoff_s: float = Field(
        default=900.0, description="Wait after a 429 or a bot check when YouTube says no time."
    )
    timeout_s: float = 30.0
    cookies_file: str | None = Field(
        default=None, description="A Netscape cookies file for yt-dlp (CITYWOK_YOUTUBE_COOKIES)."
    )
    state_dir: str | None = Field(
        default=None,
        description="The download archive and throttle file; default $CITYWOK_HOME/youtube.",
    )

    def channel_ids(self) -> list[str]:
        """The configured channels; ``ValueError`` naming a malformed id."""
        return parse_channel_ids(self.channels)

    def options(self) -> UploadOptions:
        return UploadOptions(
            skip_shorts=self.skip_shorts, skip_live=self.skip_live, max_new=self.max_new_per_tick
        )

    def fetch(self, channel_id: str, *, etag: str | None = None) -> FeedFetch:
        return fetch_feed(feed_url(self.feed_url, channel_id), etag=etag, timeout_s=self.timeout_s)

    def listing(self, channel_id: str) -> list[Upload]:
        url = channel_listing_url(channel_id, self.listing_url)
        return list_channel(url, channel_id=channel_id, timeout_s=self.timeout_s)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else citywok_home() / "youtube"

    @property
    def archive(self) -> DownloadArchive:
        return DownloadArchive(self.state_path / "download-archive.txt")

    def download(self, url: str, dest_dir: str | os.PathLike[str]) -> DownloadedAudio:
        """Wait out the pause since the last download on this machine, then download."""
        Throttle(self.state_path / "last-download", self.download_interval_s).wait()
        return download_audio(
            url, dest_dir, timeout_s=self.timeout_s, cookies_file=self.cookies_file
        )


def youtube_for(env: Mapping[str, str]) -> YouTubeResource:
    """The YouTube source: ``CITYWOK_YOUTUBE_CHANNELS``, ``CITYWOK_YOUTUBE_FEED_URL``,
    ``CITYWOK_YOUTUBE_LISTING_URL``, ``CITYWOK_YOUTUBE_COOKIES``, when set (no channels: the
    YouTube sensors skip)."""
    values = {
        field: dg.EnvVar(name)
        for field, name in (
            ("channels", "CITYWOK_YOUTUBE_CHANNELS"),
            ("feed_url", "CITYWOK_YOUTUBE_FEED_URL"),
            ("listing_url", "CITYWOK_YOUTUBE_LISTING_URL"),
            ("cookies_file", "CITYWOK_YOUTUBE_COOKIES"),
        )
        if env.get(name)
    }
    return YouTubeResource(**values)
