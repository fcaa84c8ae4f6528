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

video_job = dg.define_asset_job(
    "video_job",
    # transcript_segments (kind postgres) joins only when a database is configured.
    selection=dg.AssetSelection.assets(raw_audio, fingerprints, transcript, segment_embeddings)
    | dg.AssetSelection.kind("postgres"),
    description="Decode, fingerprint, transcribe and embed one video.",
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
]
ASSET_CHECKS = [season_snapshot_verifies]
JOBS = [video_job, season_snapshot_job, publish_job, prune_versions_job]
PUBLISHING_SCHEDULES = [prune_versions_schedule]

__all__ = [
    "ASSETS",
    "ASSET_CHECKS",
    "JOBS",
    "PUBLISHING_SCHEDULES",
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
]
