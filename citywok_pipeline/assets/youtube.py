"""YouTube in the pipeline: the channel listing job, and where a video's audio comes from
(yt-dlp, or the raw audio already stored)."""

from pathlib import Path
from typing import Any

import dagster as dg

from ..catalog import VideoRecord, utc_now
from ..resources import ArtefactStore, YouTubeResource
from ..youtube import (
    DownloadError,
    RateLimitedError,
    VideoUnavailableError,
    listing_to_json,
    video_id_of,
)
from .partitions import raw_audio_key

# A rate-limited download is retried this many times (each after the resource's back-off)
# before its partition fails; the nightly backfill requests it again.
RATE_LIMIT_RETRIES = 3


def youtube_audio_file(
    context: dg.AssetExecutionContext,
    youtube: YouTubeResource,
    artefacts: ArtefactStore,
    video: VideoRecord,
    workdir: Path,
) -> tuple[Path, dict[str, Any]]:
    """A local audio file for ``video`` and metadata on how it was obtained.

    A video in the download archive whose raw audio is stored is not downloaded again (the
    stored FLAC is decoded instead). Private, removed or blocked videos fail with the reason
    and no retry; rate limiting asks Dagster to retry the step after a back-off.
    """
    video_id = video_id_of(video.episode_id)
    key = raw_audio_key(video.episode_id)
    if video_id in youtube.archive and artefacts.exists(key):
        path = workdir / f"{video_id}.stored.flac"
        path.write_bytes(artefacts.get(key))
        return path, {"downloaded": False, "youtube_url": dg.MetadataValue.url(video.source_uri)}
    try:
        got = youtube.download(video.source_uri, workdir)
    except VideoUnavailableError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: cannot download {video.source_uri}: {exc.reason}",
            metadata={"source": video.source_uri, "reason": exc.reason},
            allow_retries=False,
        ) from exc
    except RateLimitedError as exc:
        context.log.warning(
            f"{video.episode_id}: {exc.reason}; retrying in {youtube.rate_limit_backoff_s:.0f} s"
        )
        raise dg.RetryRequested(
            max_retries=RATE_LIMIT_RETRIES, seconds_to_wait=youtube.rate_limit_backoff_s
        ) from exc
    except DownloadError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: download of {video.source_uri} failed: {exc.reason}",
            metadata={"source": video.source_uri, "reason": exc.reason},
        ) from exc
    return got.path, {
        "downloaded": True,
        "youtube_url": dg.MetadataValue.url(video.source_uri),
        "download_format": got.format,
        "extractor": got.extractor,
    }


# yt-dlp's guidance is a few hundred requests an hour: one listing at a time per deployment
# (the embedded instance runs every pool one step at a time; see the README for production).
YOUTUBE_POOL = "youtube"


def listing_key(channel_id: str) -> str:
    """Where a channel's latest good listing is stored (``listing_to_json``)."""
    return f"youtube/listings/{channel_id}.json"


@dg.asset(group_name="youtube", kinds={"youtube"}, pool=YOUTUBE_POOL)
def youtube_listing(
    context: dg.AssetExecutionContext, youtube: YouTubeResource, artefacts: ArtefactStore
) -> dg.MaterializeResult:
    """Every configured channel's full list of videos, through yt-dlp; youtube_channel_sync_sensor reads it."""
    listed: dict[str, int] = {}
    failed: dict[str, str] = {}
    for cid in youtube.channel_ids():
        try:
            uploads = youtube.listing(cid)
        except DownloadError as exc:  # a rate limit or bot check is one too
            failed[cid] = exc.reason
            context.log.warning(f"{cid}: cannot list the channel, kept its last listing: {exc}")
            continue
        artefacts.put(listing_key(cid), listing_to_json(cid, uploads, listed_at=utc_now()))
        listed[cid] = len(uploads)
        context.log.info(f"{cid}: {len(uploads)} video(s) listed")
    metadata = {
        "channels": len(listed) + len(failed),
        "videos": sum(listed.values()),
        "listed": dg.MetadataValue.json(listed),
        "failed": dg.MetadataValue.json(failed),
    }
    if failed:
        # The listings that worked are stored; the failed channels keep their previous one.
        raise dg.Failure(
            description="; ".join(f"{cid}: listing failed: {why}" for cid, why in failed.items()),
            metadata=metadata,
            allow_retries=False,
        )
    return dg.MaterializeResult(metadata=metadata)
