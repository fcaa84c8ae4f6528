"""Backfill schedules, written by hand: Dagster's partitioned-job schedules reject dynamic partitions."""

from collections.abc import Iterator, Mapping, Sequence, Set

import dagster as dg

from ..assets import fingerprints, raw_audio, video_job
from ..assets.partitions import video_partitions
from ..catalog import VideoRecord
from ..resources import CatalogResource

MAX_RUNS_PER_TICK = 50


def plan_backfill(
    keys: Sequence[str],
    *,
    failed: Set[str],
    done: Set[str],
    videos: Mapping[str, VideoRecord],
    limit: int = MAX_RUNS_PER_TICK,
) -> list[str]:
    """The video partitions to run again: missing (never materialised, not running) or failed,
    newest first (publication time for YouTube, file mtime for folders, then when found;
    videos the catalog does not know last), at most ``limit``. ``done`` holds the partitions
    materialised or in progress."""
    wanted = [k for k in keys if k in failed or k not in done]
    wanted.sort(key=lambda k: videos[k].found_at if k in videos else "", reverse=True)
    wanted.sort(key=lambda k: (k not in videos, -videos[k].mtime_ns if k in videos else 0))
    return wanted[:limit]


@dg.schedule(
    job=video_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def video_backfill_schedule(
    context: dg.ScheduleEvaluationContext, catalog: CatalogResource
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    """Nightly: runs videos whose fingerprints are missing or failed, newest first, 50 at most per night."""
    instance = context.instance
    keys = video_partitions.get_partition_keys(dynamic_partitions_store=instance)
    status = instance.get_status_by_partition(fingerprints.key, keys, video_partitions) or {}
    audio = instance.get_status_by_partition(raw_audio.key, keys, video_partitions) or {}
    # A failed download or decode skips fingerprints, which then look missing, not failed.
    failed = {k for k in keys if dg.AssetPartitionStatus.FAILED in (status.get(k), audio.get(k))}
    done = {k for k, s in status.items() if s is not None and k not in failed}
    videos = {v.episode_id: v for v in catalog.open().videos() if v.episode_id in set(keys)}
    # A removed video keeps no partition; one the catalog lost is still tried (it fails saying so).
    todo = plan_backfill(keys, failed=failed, done=done, videos=videos)
    if not todo:
        yield dg.SkipReason(f"all {len(keys)} video(s) have fingerprints or are running")
        return
    stamp = context.scheduled_execution_time.isoformat()
    for key in todo:
        yield dg.RunRequest(
            run_key=f"{key}@backfill:{stamp}",
            partition_key=key,
            tags={"citywok/backfill": "nightly"},
        )
