"""A real local HTTP server standing in for youtube.com, which cannot be reached from here.

It serves what the pipeline reads from YouTube, in YouTube's formats: channel Atom feeds at
``/feeds/videos.xml?channel_id=...`` (with an ETag, answering 304 to a matching
``If-None-Match``), media files at ``/media/<videoId>.<ext>`` (the entries' links, which
yt-dlp's generic extractor downloads) and a channel listing at ``/channel/<id>/videos`` (RSS,
which the generic extractor reads as a playlist). Tests change what it serves and make it
fail (``fail_feed``, ``fail_media``) to see what the pipeline does.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass
class Video:
    video_id: str
    title: str
    published: str
    media: Path | None = None
    short: bool = False


@dataclass
class Failure:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class LocalYouTube:
    """What the server serves; tests mutate it between sensor ticks."""

    def __init__(self) -> None:
        self.channels: dict[str, tuple[str, list[Video]]] = {}
        self.fail_feed: dict[str, Failure] = {}
        self.fail_media: dict[str, Failure] = {}
        self.fail_listing: dict[str, Failure] = {}
        self.requests: list[tuple[str, str, int]] = []  # (path, If-None-Match, status)
        self.base = ""
        self.lock = threading.Lock()

    @property
    def feed_base(self) -> str:
        return f"{self.base}/feeds/videos.xml"

    @property
    def listing_template(self) -> str:
        return f"{self.base}/channel/{{channel_id}}/videos"

    def media_url(self, video: Video) -> str:
        ext = video.media.suffix if video.media else ".m4a"
        return f"{self.base}/media/{video.video_id}{ext}"

    def add_channel(self, channel_id: str, title: str, videos: list[Video]) -> None:
        self.channels[channel_id] = (title, list(videos))

    def feed_xml(self, channel_id: str) -> bytes:
        title, videos = self.channels[channel_id]
        entries = []
        for v in sorted(videos, key=lambda v: v.published, reverse=True)[:15]:
            link = f"https://www.youtube.com/shorts/{v.video_id}" if v.short else self.media_url(v)
            entries.append(f"""
 <entry>
  <id>yt:video:{v.video_id}</id>
  <yt:videoId>{v.video_id}</yt:videoId>
  <yt:channelId>{channel_id}</yt:channelId>
  <title>{escape(v.title)}</title>
  <link rel="alternate" href="{escape(link)}"/>
  <author><name>{escape(title)}</name></author>
  <published>{v.published}</published>
  <updated>{v.published}</updated>
  <media:group><media:title>{escape(v.title)}</media:title></media:group>
 </entry>""")
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" xmlns:media="http://search.yahoo.com/mrss/" xmlns="http://www.w3.org/2005/Atom">
 <link rel="self" href="{self.base}/feeds/videos.xml?channel_id={channel_id}"/>
 <id>yt:channel:{channel_id}</id>
 <yt:channelId>{channel_id}</yt:channelId>
 <title>{escape(title)}</title>
 <author><name>{escape(title)}</name></author>
{"".join(entries)}
</feed>
""".encode()

    def listing_rss(self, channel_id: str) -> bytes:
        title, videos = self.channels[channel_id]
        items = "".join(
            f"<item><title>{escape(v.title)}</title><link>{escape(self.media_url(v))}</link></item>"
            for v in sorted(videos, key=lambda v: v.published, reverse=True)
            if not v.short
        )
        return (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>{escape(title)}</title>'
            f"<link>{self.base}/channel/{channel_id}</link>{items}</channel></rss>"
        ).encode()

    def media_file(self, video_id: str) -> Path | None:
        for _title, videos in self.channels.values():
            for v in videos:
                if v.video_id == video_id:
                    return v.media
        return None

    def feed_requests(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0].startswith("/feeds/")]


def _handler(state: LocalYouTube) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            with state.lock:
                state.requests.append((self.path, self.headers.get("If-None-Match") or "", status))
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if url.path == "/feeds/videos.xml":
                cid = urllib.parse.parse_qs(url.query).get("channel_id", [""])[0]
                if cid in state.fail_feed:
                    f = state.fail_feed[cid]
                    return self._send(f.status, f.body, f.headers)
                if cid not in state.channels:
                    return self._send(404, b"not found")
                body = state.feed_xml(cid)
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    return self._send(304, b"", {"ETag": etag})
                return self._send(200, body, {"ETag": etag, "Content-Type": "text/xml"})
            if len(parts) == 3 and parts[0] == "channel" and parts[2] == "videos":
                if parts[1] in state.fail_listing:
                    f = state.fail_listing[parts[1]]
                    return self._send(f.status, f.body, f.headers)
                if parts[1] not in state.channels:
                    return self._send(404, b"not found")
                return self._send(
                    200, state.listing_rss(parts[1]), {"Content-Type": "application/rss+xml"}
                )
            if len(parts) == 2 and parts[0] == "media":
                video_id = parts[1].split(".", 1)[0]
                if video_id in state.fail_media:
                    f = state.fail_media[video_id]
                    return self._send(f.status, f.body, f.headers)
                path = state.media_file(video_id)
                if path is None or not path.is_file():
                    return self._send(404, b"Video unavailable")
                kind = {".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac"}
                return self._send(
                    200, path.read_bytes(), {"Content-Type": kind.get(path.suffix, "audio/mp4")}
                )
            return self._send(404, b"not found")

    return Handler


@contextmanager
def serve_local_youtube() -> Iterator[LocalYouTube]:
    state = LocalYouTube()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
