"""Backfill schedules, written by hand: Dagster's partitioned-job schedules reject dynamic partitions."""

from collections.abc import Iterator

import dagster as dg

from ..assets import fingerprints, video_job
from ..assets.partitions import video_partitions

MAX_RUNS_PER_TICK = 50


@dg.schedule(
    job=video_job,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def video_backfill_schedule(
    context: dg.ScheduleEvaluationContext,
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    """Hourly: requests runs for videos whose fingerprints were never materialised (50 at most per tick)."""
    instance = context.instance
    keys = video_partitions.get_partition_keys(dynamic_partitions_store=instance)
    status = instance.get_status_by_partition(fingerprints.key, keys, video_partitions) or {}
    # Only missing partitions: a failed one (a corrupt file) would fail again the same way.
    missing = [k for k in keys if status.get(k) is None][:MAX_RUNS_PER_TICK]
    if not missing:
        yield dg.SkipReason(f"all {len(keys)} video(s) have fingerprints or are running or failed")
        return
    stamp = context.scheduled_execution_time.isoformat()
    for key in missing:
        yield dg.RunRequest(run_key=f"{key}@backfill:{stamp}", partition_key=key)
