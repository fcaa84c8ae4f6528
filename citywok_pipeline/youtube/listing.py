"""A channel's full upload list through yt-dlp (a flat playlist: no page per video).

The feed only lists the newest 15 uploads and has been down for days at a time; this listing
is how a channel's history is backfilled and how missed uploads are found.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import urllib.parse
from typing import Any

from .download import classify_download_error
from .feed import Upload

DEFAULT_LISTING_URL = "https://www.youtube.com/channel/{channel_id}/videos"
_VIDEO_ID_RE = re.compile(r"^[0-9A-Za-z_-]{11}$")


def channel_listing_url(channel_id: str, template: str = DEFAULT_LISTING_URL) -> str:
    """The listing page of ``channel_id`` (``template`` has a ``{channel_id}`` field)."""
    if "{channel_id}" not in template:
        raise ValueError(f"the channel listing URL {template!r} has no {{channel_id}} field")
    return template.format(channel_id=urllib.parse.quote(channel_id, safe=""))


def _video_id(entry: dict[str, Any]) -> str | None:
    candidate = str(entry.get("id") or "")
    if _VIDEO_ID_RE.match(candidate):
        return candidate
    url = str(entry.get("url") or "")
    parsed = urllib.parse.urlparse(url)
    v = urllib.parse.parse_qs(parsed.query).get("v", [""])[0]
    if _VIDEO_ID_RE.match(v):
        return v
    stem = parsed.path.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    return stem if _VIDEO_ID_RE.match(stem) else None


def _published(entry: dict[str, Any]) -> str:
    if entry.get("timestamp"):
        ts = datetime.datetime.fromtimestamp(float(entry["timestamp"]), datetime.UTC)
        return ts.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    date = str(entry.get("upload_date") or "")
    if re.fullmatch(r"\d{8}", date):
        return f"{date[:4]}-{date[4:6]}-{date[6:]}T00:00:00+00:00"
    return ""


def list_channel(url: str, *, channel_id: str, timeout_s: float = 60.0) -> list[Upload]:
    """Every video the listing at ``url`` names, in its order (newest first on YouTube).

    Entries without a recognisable video id are left out. Errors are those of
    :func:`~.download.classify_download_error` (a rate limit is a ``RateLimitedError``).
    """
    import yt_dlp

    from .download import _QuietLogger

    options: dict[str, Any] = {
        "extract_flat": "in_playlist",
        "quiet": True,
        "no_warnings": True,
        "logger": _QuietLogger(),
        "socket_timeout": timeout_s,
        "cachedir": False,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.DownloadError as exc:
        raise classify_download_error(url, str(exc)) from exc
    entries = (info or {}).get("entries") or []
    channel_title = str((info or {}).get("channel") or (info or {}).get("title") or "")
    uploads = []
    for entry in entries:
        if not entry:
            continue
        video_id = _video_id(entry)
        if video_id is None:
            continue
        link = str(entry.get("url") or f"https://www.youtube.com/watch?v={video_id}")
        uploads.append(
            Upload(
                video_id=video_id,
                channel_id=channel_id,
                title=str(entry.get("title") or video_id),
                url=link,
                published=_published(entry),
                channel_title=channel_title,
                is_short="/shorts/" in link,
                live_status=entry.get("live_status"),
                duration_s=float(entry["duration"]) if entry.get("duration") else None,
            )
        )
    return uploads


# A listing stored between the job that lists a channel and the sensor that reads it.
LISTING_FORMAT = "citywok-youtube-listing-1"
_CHANNEL_ID_RE = re.compile(r"^UC[0-9A-Za-z_-]{22}$")


class ListingFormatError(ValueError):
    """A stored listing that is not one :func:`listing_to_json` wrote (``label`` names it)."""


def listing_to_json(channel_id: str, uploads: list[Upload], *, listed_at: str) -> bytes:
    """The stored form of a channel's listing: JSON, uploads in the listing's order."""
    return json.dumps(
        {
            "format": LISTING_FORMAT,
            "channel_id": channel_id,
            "listed_at": listed_at,
            "uploads": [dataclasses.asdict(u) for u in uploads],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def listing_from_json(blob: bytes, *, channel_id: str, label: str) -> tuple[str, list[Upload]]:
    """When a stored listing was made and its uploads; :class:`ListingFormatError` naming
    ``label`` and the first problem. Every field is checked: the blob comes from a bucket."""

    def bad(problem: str) -> ListingFormatError:
        return ListingFormatError(f"{label}: {problem}")

    try:
        data = json.loads(blob)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != LISTING_FORMAT:
        raise bad(f"not a {LISTING_FORMAT} document")
    if data.get("channel_id") != channel_id or not _CHANNEL_ID_RE.match(channel_id):
        raise bad(f"lists channel {data.get('channel_id')!r}, expected {channel_id!r}")
    listed_at = data.get("listed_at")
    entries = data.get("uploads")
    if not isinstance(listed_at, str) or not isinstance(entries, list):
        raise bad("listed_at must be a string and uploads a list")
    uploads = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad(f"upload {i} is not an object")
        strings = ("video_id", "channel_id", "title", "url", "published", "channel_title")
        if not all(isinstance(entry.get(k), str) for k in strings):
            raise bad(f"upload {i}: {', '.join(strings)} must be strings")
        if not _VIDEO_ID_RE.match(entry["video_id"]) or entry["channel_id"] != channel_id:
            raise bad(f"upload {i}: bad video id {entry['video_id']!r} or channel")
        if urllib.parse.urlparse(entry["url"]).scheme not in ("http", "https"):
            raise bad(f"upload {i}: url {entry['url']!r} is not http(s)")
        live, duration = entry.get("live_status"), entry.get("duration_s")
        if not isinstance(entry.get("is_short"), bool) or not (
            live is None or isinstance(live, str)
        ):
            raise bad(f"upload {i}: is_short must be a boolean and live_status a string or null")
        if not (duration is None or (isinstance(duration, int | float) and duration >= 0)):
            raise bad(f"upload {i}: duration_s must be a non-negative number or null")
        uploads.append(
            Upload(
                **{k: entry[k] for k in strings},
                is_short=entry["is_short"],
                live_status=live,
                duration_s=None if duration is None else float(duration),
            )
        )
    return listed_at, uploads
