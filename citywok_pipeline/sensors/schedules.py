"""Schedules: the full YouTube channel listing every 6 hours (the nightly catch-up is declarative
automation, see ``citywok_pipeline.automation``; retention is ``prune_versions_schedule``)."""

import dagster as dg

from ..assets import youtube_listing_job
from ..resources import YouTubeResource


@dg.schedule(
    job=youtube_listing_job,
    cron_schedule="0 */6 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def youtube_listing_schedule(
    context: dg.ScheduleEvaluationContext, youtube: YouTubeResource
) -> dg.RunRequest | dg.SkipReason:
    """Every 6 hours (00:00, 06:00, 12:00, 18:00 UTC): lists every configured channel in full."""
    channels = youtube.channel_ids()
    if not channels:
        return dg.SkipReason("no YouTube channels configured (CITYWOK_YOUTUBE_CHANNELS)")
    return dg.RunRequest(run_key=context.scheduled_execution_time.isoformat())
