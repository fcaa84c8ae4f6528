"""Sensors and schedules: the media scan, YouTube uploads, season shards, backfills."""

from .media import media_scan_sensor
from .schedules import video_backfill_schedule
from .seasons import season_snapshot_sensor
from .youtube import youtube_channel_sync_sensor, youtube_uploads_sensor

SENSORS = [
    media_scan_sensor,
    season_snapshot_sensor,
    youtube_uploads_sensor,
    youtube_channel_sync_sensor,
]
SCHEDULES = [video_backfill_schedule]

__all__ = [
    "SCHEDULES",
    "SENSORS",
    "media_scan_sensor",
    "season_snapshot_sensor",
    "video_backfill_schedule",
    "youtube_channel_sync_sensor",
    "youtube_uploads_sensor",
]
