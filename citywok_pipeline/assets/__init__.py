"""The software-defined assets, one module per stage, and the jobs that run them."""

import dagster as dg

from .audio import raw_audio, source_media
from .embeddings import segment_embeddings
from .fingerprints import fingerprints
from .partitions import season_partitions, video_partitions
from .publishing import (
    prune_versions_job,
    prune_versions_schedule,
    publish_job,
    published_version,
)
from .snapshots import season_snapshot, season_snapshot_verifies
from .transcript_segments import transcript_segments
from .transcripts import transcript
from .youtube import youtube_listing

# The per-video assets; transcript_segments (kind postgres) joins only when a database is
# configured.
VIDEO_ASSETS = dg.AssetSelection.assets(
    raw_audio, fingerprints, transcript, segment_embeddings
) | dg.AssetSelection.kind("postgres")

video_job = dg.define_asset_job(
    "video_job",
    selection=VIDEO_ASSETS,
    description="Decode, fingerprint, transcribe and embed one video.",
)
youtube_listing_job = dg.define_asset_job(
    "youtube_listing_job",
    selection=dg.AssetSelection.assets(youtube_listing),
    description="List every configured YouTube channel in full (yt-dlp) for the channel sync sensor.",
)
season_snapshot_job = dg.define_asset_job(
    "season_snapshot_job",
    selection=dg.AssetSelection.assets(season_snapshot),
    description="Build one season's shard and verify it.",
)

ASSETS = [
    source_media,
    raw_audio,
    fingerprints,
    transcript,
    segment_embeddings,
    season_snapshot,
    published_version,
    youtube_listing,
]
ASSET_CHECKS = [season_snapshot_verifies]
JOBS = [video_job, season_snapshot_job, publish_job, prune_versions_job, youtube_listing_job]
PUBLISHING_SCHEDULES = [prune_versions_schedule]

__all__ = [
    "ASSETS",
    "ASSET_CHECKS",
    "JOBS",
    "PUBLISHING_SCHEDULES",
    "VIDEO_ASSETS",
    "fingerprints",
    "publish_job",
    "published_version",
    "raw_audio",
    "season_partitions",
    "season_snapshot",
    "season_snapshot_job",
    "season_snapshot_verifies",
    "segment_embeddings",
    "source_media",
    "transcript",
    "transcript_segments",
    "video_job",
    "video_partitions",
    "youtube_listing",
    "youtube_listing_job",
]
