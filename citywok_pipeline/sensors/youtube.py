"""YouTube sensors: new uploads from the channel feeds, and the stored full listings
(``youtube_listing``, a job of its own) that reconcile them.

Novelty is decided by the instance's video partitions (``yt-<videoId>``), never by the
cursor alone: a reset cursor re-reads the feeds without re-ingesting anything, and a video
that drops off the 15-entry feed keeps its partition. The cursor only holds what saves
requests: each feed's ETag, and until when a rate-limited channel is left alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg

from ..assets import source_media, video_job
from ..assets.partitions import season_partitions, video_partitions
from ..assets.youtube import listing_key
from ..blobstore import BlobNotFoundError
from ..catalog import Catalog, ScanPlan, VideoRecord, utc_now
from ..resources import ArtefactStore, CatalogResource, YouTubeResource
from ..youtube import (
    FeedError,
    FeedRateLimitedError,
    FeedUnavailableError,
    ListingFormatError,
    Upload,
    UploadOptions,
    listing_from_json,
    plan_uploads,
)


@dataclass
class FeedCursor:
    """What the uploads sensor remembers between ticks (JSON in the cursor)."""

    etags: dict[str, str] = field(default_factory=dict)
    backoff_until: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> FeedCursor:
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:  # a cursor from another version: start again, novelty is not in it
            data = {}
        return cls(dict(data.get("etags", {})), dict(data.get("backoff_until", {})))

    def dump(self) -> str:
        return json.dumps(
            {"etags": self.etags, "backoff_until": self.backoff_until}, sort_keys=True
        )


def _published_ns(published: str) -> int:
    try:
        return int(datetime.fromisoformat(published.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return 0


def upload_record(upload: Upload, *, existing: VideoRecord | None, now: str) -> VideoRecord:
    """The catalog row of an upload. Its URL is where ``raw_audio`` fetches the audio from;
    ``mtime_ns`` is its publication time (what "newest first" sorts on); ``size`` is 0 until
    downloaded. A known row keeps ``found_at`` (and so its run key)."""
    keep = existing is not None and not existing.removed
    return VideoRecord(
        episode_id=upload.episode_id,
        season=upload.season,
        show=upload.channel_title or upload.channel_id,
        season_number=None,
        episode_number=None,
        source=upload.url,
        source_uri=upload.url,
        title=upload.title,
        size=existing.size if keep and existing else 0,
        mtime_ns=_published_ns(upload.published),
        found_at=existing.found_at if keep and existing else now,
        changed_at=now,
        **(
            {
                k: getattr(existing, k)
                for k in ("sha256", "duration_s", "audio_version", "fingerprints_version",
                          "fingerprinted_at", "embeddings_version")
            }
            if keep and existing
            else {}
        ),
    )  # fmt: skip


def run_key(record: VideoRecord) -> str:
    """One run per video generation: the daemon drops a key it has seen."""
    return f"{record.episode_id}@{record.found_at}"


def ingest_result(
    context: dg.SensorEvaluationContext,
    cat: Catalog,
    *,
    partitioned: Sequence[Upload],
    to_run: Iterable[str],
    cursor: str,
    notes: Sequence[str] = (),
) -> dg.SensorResult:
    """Catalog rows, partitions, observations and runs for the uploads, as one SensorResult.

    ``partitioned`` get a catalog row and a partition; those in ``to_run`` (episode ids)
    get a run. A video with a partition and no run (over the cap, or a request lost before
    the daemon took it) is left to the nightly catch-up: re-requesting every pending
    video here would undo the per-tick cap.
    """
    instance = context.instance
    now = utc_now()
    known_seasons = set(instance.get_dynamic_partitions(season_partitions.name))
    known_videos = set(instance.get_dynamic_partitions(video_partitions.name))
    existing = {r.episode_id: r for r in cat.videos(include_removed=True)}
    records = [upload_record(u, existing=existing.get(u.episode_id), now=now) for u in partitioned]
    if records:
        cat.apply_scan(ScanPlan(upserts=tuple(records)), now=now)
    by_id = {r.episode_id: r for r in cat.videos()}
    wanted = list(dict.fromkeys(to_run))
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    seasons = sorted({r.season for r in records} - known_seasons)
    if seasons:
        requests.append(season_partitions.build_add_request(seasons))
    videos = [r.episode_id for r in records if r.episode_id not in known_videos]
    if videos:
        requests.append(video_partitions.build_add_request(videos))
    observations = [
        dg.AssetObservation(
            asset_key=source_media.key,
            partition=r.episode_id,
            tags={"dagster/data_version": r.source_uri},
            metadata={"source": dg.MetadataValue.url(r.source_uri), "season": r.season,
                      "title": r.title},
        )
        for r in records
        if r.episode_id not in known_videos
    ]  # fmt: skip
    runs = [
        dg.RunRequest(run_key=run_key(by_id[eid]), partition_key=eid)
        for eid in wanted
        if eid in by_id
    ]
    if videos or notes:
        context.log.info("; ".join([f"{len(videos)} new video(s)", *notes]))
    if not (runs or requests):
        return dg.SensorResult(skip_reason="; ".join(["no new uploads", *notes]), cursor=cursor)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=requests,
        asset_events=observations,
        cursor=cursor,
    )


@dg.sensor(
    job=video_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING
)
def youtube_uploads_sensor(
    context: dg.SensorEvaluationContext, youtube: YouTubeResource, catalog: CatalogResource
) -> dg.SensorResult:
    """Polls each channel's feed (with its ETag): new uploads get a partition and a run, newest first, a few per tick."""
    channels = youtube.channel_ids()
    state = FeedCursor.load(context.cursor)
    if not channels:
        return dg.SensorResult(
            skip_reason="no YouTube channels configured (CITYWOK_YOUTUBE_CHANNELS)",
            cursor=state.dump(),
        )
    known = set(context.instance.get_dynamic_partitions(video_partitions.name))
    budget = youtube.options().max_new
    options = youtube.options()
    new: list[Upload] = []
    notes: list[str] = []
    for cid in channels:
        if state.backoff_until.get(cid, 0.0) > time.time():
            notes.append(f"{cid}: backing off until {time.ctime(state.backoff_until[cid])}")
            continue
        try:
            fetched = youtube.fetch(cid, etag=state.etags.get(cid))
        except FeedRateLimitedError as exc:
            wait = exc.retry_after_s or youtube.rate_limit_backoff_s
            state.backoff_until[cid] = time.time() + wait
            context.log.warning(f"{cid}: {exc.reason}; next try in {wait:.0f} s")
            notes.append(f"{cid}: rate limited")
            continue
        except (FeedUnavailableError, FeedError) as exc:
            # The ETag stays: the next good answer is compared with the last good one.
            context.log.warning(f"{cid}: feed unreadable, kept the cursor: {exc}")
            notes.append(f"{cid}: feed unreadable")
            continue
        state.backoff_until.pop(cid, None)
        if fetched.feed is None:
            continue
        plan = plan_uploads(
            fetched.feed.uploads,
            known=known,
            options=UploadOptions(
                skip_shorts=options.skip_shorts, skip_live=options.skip_live, max_new=max(budget, 1)
            ),
        )
        taken = list(plan.new) if budget > 0 else []
        deferred = list(plan.deferred) + ([] if budget > 0 else list(plan.new))
        budget -= len(taken)
        new += taken
        for video_id, reason in plan.skipped:
            context.log.debug(f"{cid}: skipped {video_id}: {reason}")
        if deferred:
            # Keep the old ETag so the next tick reads the whole feed again, not a 304.
            notes.append(f"{cid}: {len(deferred)} more next tick")
        elif fetched.etag:
            state.etags[cid] = fetched.etag
    return ingest_result(
        context,
        catalog.open(),
        partitioned=new,
        to_run=[u.episode_id for u in new],
        cursor=state.dump(),
        notes=notes,
    )


@dg.sensor(
    job=video_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING
)
def youtube_channel_sync_sensor(
    context: dg.SensorEvaluationContext,
    youtube: YouTubeResource,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
) -> dg.SensorResult:
    """Reads the channel listings youtube_listing_job stored: a partition for every video the feed missed, runs for the newest few; the nightly catch-up does the rest."""
    channels = youtube.channel_ids()
    if not channels:
        return dg.SensorResult(
            skip_reason="no YouTube channels configured (CITYWOK_YOUTUBE_CHANNELS)"
        )
    # The cursor names the listing each channel was last reconciled with: an unchanged
    # listing is not read twice. Novelty is still the partitions', so a reset cursor only
    # costs a re-read.
    try:
        read = dict(json.loads(context.cursor)) if context.cursor else {}
    except (TypeError, ValueError):
        read = {}
    known = set(context.instance.get_dynamic_partitions(video_partitions.name))
    options = youtube.options()
    everything = UploadOptions(
        skip_shorts=options.skip_shorts, skip_live=options.skip_live, max_new=1 << 30
    )
    missing: list[Upload] = []
    notes: list[str] = []
    for cid in channels:
        key = listing_key(cid)
        try:
            listed_at, listed = listing_from_json(
                artefacts.get(key), channel_id=cid, label=artefacts.uri(key)
            )
        except BlobNotFoundError:
            notes.append(f"{cid}: not listed yet (youtube_listing_job)")
            continue
        except ListingFormatError as exc:
            context.log.warning(f"{cid}: stored listing unusable, skipped: {exc}")
            notes.append(f"{cid}: listing unusable")
            continue
        if read.get(cid) == listed_at:
            continue
        read[cid] = listed_at
        missing += plan_uploads(listed, known=known, options=everything).new
    missing.sort(key=lambda u: u.published, reverse=True)
    return ingest_result(
        context,
        catalog.open(),
        partitioned=missing,
        to_run=[u.episode_id for u in missing[: options.max_new]],
        cursor=json.dumps(read, sort_keys=True),
        notes=notes,
    )
