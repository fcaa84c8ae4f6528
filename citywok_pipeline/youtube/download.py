"""A video's best audio through yt-dlp, and what a failure means.

Failures come in two kinds, and callers treat them differently:

- :class:`VideoUnavailableError`: private, removed, region-blocked, members-only,
  age-restricted, a live stream, an unsupported URL. Retrying does not help: the video's
  partition fails with the reason.
- :class:`RateLimitedError`: HTTP 429, 403 from the media servers, or YouTube's "confirm
  you're not a bot" answer. Back off and retry later; nothing is wrong with the video.

Any other :class:`DownloadError` (a dropped connection) is worth an ordinary retry.

yt-dlp's guidance is at most ~300 videos an hour with 5-10 s between downloads:
:class:`Throttle` spaces downloads on one machine (through a file, so separate step
processes share it), and :class:`DownloadArchive` remembers which videos were fetched,
in yt-dlp's own ``--download-archive`` format.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DownloadError(Exception):
    """A download that failed; ``reason`` says why in a few words."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class VideoUnavailableError(DownloadError):
    """The video cannot be downloaded by anyone asking again (private, removed, blocked...)."""


class RateLimitedError(DownloadError):
    """YouTube asks us to slow down; ``retry_after_s`` is a suggested wait."""

    def __init__(self, url: str, reason: str, *, retry_after_s: float = 600.0) -> None:
        super().__init__(url, reason)
        self.retry_after_s = retry_after_s


# (pattern in yt-dlp's message, reason), checked in order: the first match wins.
_RATE_LIMITED = (
    (re.compile(r"not a bot", re.I), "YouTube asks to confirm this is not a bot"),
    (re.compile(r"HTTP Error 429|Too Many Requests", re.I), "HTTP 429 Too Many Requests"),
    (re.compile(r"HTTP Error 403", re.I), "HTTP 403 Forbidden from the media server"),
    (re.compile(r"rate[- ]limit", re.I), "rate limited"),
)
_UNAVAILABLE = (
    (re.compile(r"private video", re.I), "private video"),
    (re.compile(r"members[- ]only|join this channel", re.I), "members-only video"),
    (re.compile(r"confirm your age|age[- ]restricted|inappropriate for some users", re.I),
     "age-restricted video (needs a signed-in account)"),
    (re.compile(r"not (made this video )?available in your country|geo[- ]?restrict|blocked it in your country", re.I),
     "blocked in this region"),
    (re.compile(r"account .* terminated|removed by the uploader|has been removed|no longer available", re.I),
     "removed video"),
    (re.compile(r"live event will begin|premieres? in|is_upcoming|is a live", re.I),
     "a live stream or premiere that has not ended"),
    (re.compile(r"HTTP Error 404|HTTP Error 410|video unavailable|does not exist", re.I),
     "video not found (removed or never existed)"),
    (re.compile(r"Unsupported URL", re.I), "not a video URL yt-dlp supports"),
    (re.compile(r"Requested format is not available|no video formats found", re.I),
     "no downloadable audio format"),
)  # fmt: skip


def classify_download_error(url: str, message: str) -> DownloadError:
    """The error a yt-dlp failure message means (see the module docstring)."""
    text = re.sub(r"^ERROR:\s*", "", message.strip())
    for pattern, reason in _RATE_LIMITED:
        if pattern.search(text):
            return RateLimitedError(url, reason)
    for pattern, reason in _UNAVAILABLE:
        if pattern.search(text):
            return VideoUnavailableError(url, reason)
    first_line = text.splitlines()[0] if text else "yt-dlp failed without a message"
    return DownloadError(url, first_line[:300])


class _QuietLogger:
    """yt-dlp logs through this instead of printing; errors come back as exceptions."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    def error(self, msg: str) -> None:
        pass


@dataclass(frozen=True)
class DownloadedAudio:
    """A downloaded audio file and what yt-dlp said about it."""

    path: Path
    video_id: str
    title: str
    extractor: str
    duration_s: float | None
    format: str


def download_audio(
    url: str,
    dest_dir: str | os.PathLike[str],
    *,
    timeout_s: float = 60.0,
    cookies_file: str | None = None,
) -> DownloadedAudio:
    """Download ``url``'s best audio (else its best format) into ``dest_dir`` as yt-dlp gets it.

    No conversion: the caller decodes the container with ffmpeg and checks the samples
    (a 0-sample file can come back with exit code 0). Live streams and upcoming premieres
    are refused before anything is downloaded.
    """
    import yt_dlp

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    logger = _QuietLogger()
    options: dict[str, Any] = {
        "format": "bestaudio/best",
        "outtmpl": str(dest / "%(id)s.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logger,
        "socket_timeout": timeout_s,
        "retries": 2,
        "cachedir": False,
    }
    if cookies_file:
        options["cookiefile"] = cookies_file
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
            if info is None:
                raise VideoUnavailableError(url, "yt-dlp found nothing to download")
            if info.get("_type") in ("playlist", "multi_video"):
                raise VideoUnavailableError(url, "a playlist, not one video")
            live = info.get("live_status")
            if live in ("is_live", "is_upcoming", "post_live"):
                raise VideoUnavailableError(url, f"a live stream or premiere ({live})")
            info = ydl.process_ie_result(info, download=True)
    except yt_dlp.utils.DownloadError as exc:
        raise classify_download_error(url, str(exc)) from exc
    downloads = info.get("requested_downloads") or []
    path = Path(downloads[0]["filepath"]) if downloads else None
    if path is None or not path.is_file():
        raise DownloadError(url, "yt-dlp reported success but wrote no file")
    if path.stat().st_size == 0:
        raise DownloadError(url, "yt-dlp wrote an empty file")
    return DownloadedAudio(
        path=path,
        video_id=str(info.get("id") or ""),
        title=str(info.get("title") or ""),
        extractor=str(info.get("extractor_key") or info.get("extractor") or ""),
        duration_s=float(info["duration"]) if info.get("duration") else None,
        format=str(info.get("format_id") or info.get("ext") or ""),
    )


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class DownloadArchive:
    """Videos already downloaded, one ``youtube <videoId>`` line each (yt-dlp's archive format,
    so ``yt-dlp --download-archive`` reads the same file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def ids(self) -> set[str]:
        if not self.path.is_file():
            return set()
        out = set()
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "youtube":
                out.add(parts[1])
        return out

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.ids()

    def add(self, video_id: str) -> None:
        """Append ``video_id`` once, under a lock (several step processes share the file)."""
        with _locked(self.path.with_name(self.path.name + ".lock")):
            if video_id in self.ids():
                return
            with self.path.open("a") as f:
                f.write(f"youtube {video_id}\n")


class Throttle:
    """At least ``interval_s`` between downloads on this machine, across processes.

    The time of the last download start is kept in ``path``; :meth:`wait` sleeps what is left
    of the interval, under a lock, so two processes never start downloads closer together.
    """

    def __init__(self, path: str | os.PathLike[str], interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError(f"the pause between downloads must be >= 0 s, got {interval_s}")
        self.path = Path(path)
        self.interval_s = interval_s

    def wait(self) -> float:
        """Sleep until the interval since the last start has passed; the seconds slept."""
        with _locked(self.path) as fd:
            raw = os.pread(fd, 64, 0).decode().strip()
            last = float(raw) if raw else 0.0
            slept = max(0.0, last + self.interval_s - time.time())
            if slept:
                time.sleep(slept)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{time.time():.6f}".encode(), 0)
        return slept
