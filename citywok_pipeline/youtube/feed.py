"""A channel's Atom feed: ``<base>?channel_id=UC...``, its latest 15 uploads.

The feed is a cheap trigger, not the truth: it lists only the newest entries and has had
multi-day outages, so the channel listing (:mod:`.listing`) reconciles it. Fetches send the
last ``ETag`` (``If-None-Match``) and a 304 costs nothing.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

DEFAULT_FEED_URL = "https://www.youtube.com/feeds/videos.xml"
USER_AGENT = "citywok-pipeline (+https://github.com/citywok)"

_ATOM = "{http://www.w3.org/2005/Atom}"
_YT = "{http://www.youtube.com/xml/schemas/2015}"
_CHANNEL_ID_RE = re.compile(r"^UC[0-9A-Za-z_-]{22}$")
_VIDEO_ID_RE = re.compile(r"^[0-9A-Za-z_-]{11}$")
_PREFIX = "yt-"


class FeedError(ValueError):
    """A feed that cannot be read as a YouTube channel feed: names the feed and the problem."""


class FeedUnavailableError(OSError):
    """The feed did not answer usefully (a 5xx, a timeout, a refused connection): try later."""

    def __init__(self, url: str, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.retry_after_s = retry_after_s


class FeedRateLimitedError(FeedUnavailableError):
    """429, or YouTube's "confirm you're not a bot" page: back off before asking again."""


def parse_channel_ids(value: str) -> list[str]:
    """Channel ids from a comma-separated list (``CITYWOK_YOUTUBE_CHANNELS``), in order, once each.

    Raises ``ValueError`` naming the first id that is not ``UC`` followed by 22 characters.
    """
    ids: list[str] = []
    for raw in value.split(","):
        cid = raw.strip()
        if not cid:
            continue
        if not _CHANNEL_ID_RE.match(cid):
            raise ValueError(
                f"YouTube channel id {cid!r} is not 'UC' followed by 22 letters, digits, '-' or '_' "
                "(a channel URL's /channel/<id> part; handles like @name are not ids)"
            )
        if cid not in ids:
            ids.append(cid)
    return ids


def channel_season(channel_id: str) -> str:
    """The season (partition key) of a channel: ``yt-UC...``."""
    return f"{_PREFIX}{channel_id}"


def video_episode(video_id: str) -> str:
    """The episode (partition key) of a video: ``yt-<videoId>``."""
    return f"{_PREFIX}{video_id}"


def is_youtube_episode(episode_id: str) -> bool:
    """``yt-`` and an 11-character video id (a show slugged ``yt-...`` is longer or shorter)."""
    return episode_id.startswith(_PREFIX) and bool(_VIDEO_ID_RE.match(episode_id[len(_PREFIX) :]))


def video_id_of(episode_id: str) -> str:
    """The YouTube video id of a ``yt-<videoId>`` episode; ``ValueError`` for other ids."""
    if not is_youtube_episode(episode_id):
        raise ValueError(f"episode {episode_id!r} is not a YouTube video (yt-<videoId>)")
    return episode_id[len(_PREFIX) :]


def feed_url(base: str, channel_id: str) -> str:
    """The feed of ``channel_id`` under ``base`` (``CITYWOK_YOUTUBE_FEED_URL``)."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{urllib.parse.urlencode({'channel_id': channel_id})}"


@dataclass(frozen=True, kw_only=True)
class Upload:
    """One video of a channel, as a feed or a listing describes it.

    ``published`` is ISO-8601 (``""`` when the listing does not say); ``url`` is where its
    audio is fetched from (the watch page, or in tests a local media file).
    """

    video_id: str
    channel_id: str
    title: str
    url: str
    published: str = ""
    channel_title: str = ""
    is_short: bool = False
    live_status: str | None = None
    duration_s: float | None = None

    @property
    def episode_id(self) -> str:
        return video_episode(self.video_id)

    @property
    def season(self) -> str:
        return channel_season(self.channel_id)

    @property
    def is_live(self) -> bool:
        """A live stream or a premiere that has not finished (nothing to download yet)."""
        return self.live_status in ("is_live", "is_upcoming", "post_live")


@dataclass(frozen=True)
class ChannelFeed:
    channel_id: str
    title: str
    uploads: tuple[Upload, ...]


@dataclass(frozen=True)
class FeedFetch:
    """A fetch's answer: the feed, or ``None`` when it did not change since ``etag``."""

    feed: ChannelFeed | None
    etag: str | None

    @property
    def not_modified(self) -> bool:
        return self.feed is None


def _text(el: ET.Element, path: str) -> str:
    found = el.find(path)
    return (found.text or "").strip() if found is not None else ""


def parse_feed(xml: bytes, *, source: str) -> ChannelFeed:
    """The uploads of a channel feed, newest first; ``FeedError`` naming ``source`` if malformed."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FeedError(f"{source}: not XML ({exc})") from exc
    if root.tag != f"{_ATOM}feed":
        raise FeedError(f"{source}: not an Atom feed (root element {root.tag!r})")
    channel_id = _text(root, f"{_YT}channelId")
    title = _text(root, f"{_ATOM}title") or _text(root, f"{_ATOM}author/{_ATOM}name")
    uploads: list[Upload] = []
    for i, entry in enumerate(root.findall(f"{_ATOM}entry"), start=1):
        video_id = _text(entry, f"{_YT}videoId")
        if not _VIDEO_ID_RE.match(video_id):
            raise FeedError(f"{source}: entry {i} has no valid yt:videoId ({video_id!r})")
        entry_channel = _text(entry, f"{_YT}channelId") or channel_id
        link = entry.find(f"{_ATOM}link[@rel='alternate']")
        url = link.get("href", "") if link is not None else ""
        if not url:
            url = f"https://www.youtube.com/watch?v={video_id}"
        uploads.append(
            Upload(
                video_id=video_id,
                channel_id=entry_channel,
                title=_text(entry, f"{_ATOM}title") or video_id,
                url=url,
                published=_text(entry, f"{_ATOM}published"),
                channel_title=title,
                is_short="/shorts/" in url,
            )
        )
    if not channel_id:
        channel_id = uploads[0].channel_id if uploads else ""
    if not channel_id:
        raise FeedError(f"{source}: no yt:channelId")
    uploads.sort(key=lambda u: u.published, reverse=True)
    return ChannelFeed(channel_id, title, tuple(uploads))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def fetch_feed(url: str, *, etag: str | None = None, timeout_s: float = 15.0) -> FeedFetch:
    """Fetch and parse a feed, sending ``etag`` as ``If-None-Match``.

    Raises :class:`FeedRateLimitedError` on 429 or a bot check, :class:`FeedUnavailableError`
    on other HTTP errors and network failures, :class:`FeedError` on a malformed body.
    """
    headers = {"User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
            new_etag = response.headers.get("ETag")
            final_url = response.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return FeedFetch(None, etag)
        retry = _retry_after(exc.headers)
        if exc.code == 429:
            raise FeedRateLimitedError(
                url, "HTTP 429 Too Many Requests", retry_after_s=retry
            ) from exc
        if exc.code == 404:
            raise FeedUnavailableError(url, "HTTP 404: no such channel feed") from exc
        raise FeedUnavailableError(
            url, f"HTTP {exc.code} {exc.reason}", retry_after_s=retry
        ) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FeedUnavailableError(url, f"no answer ({reason})") from exc
    bot_check = FeedRateLimitedError(url, "YouTube asks to confirm this is not a bot")
    if "google.com/sorry" in final_url:
        raise bot_check
    try:
        return FeedFetch(parse_feed(body, source=url), new_etag)
    except FeedError:
        if b"not a bot" in body[:65536].lower():
            raise bot_check from None
        raise
