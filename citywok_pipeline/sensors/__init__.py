"""Sensors and schedules: the media scan, season shards, backfills."""

from .media import media_scan_sensor
from .schedules import video_backfill_schedule
from .seasons import season_snapshot_sensor

SENSORS = [media_scan_sensor, season_snapshot_sensor]
SCHEDULES = [video_backfill_schedule]

__all__ = [
    "SCHEDULES",
    "SENSORS",
    "media_scan_sensor",
    "season_snapshot_sensor",
    "video_backfill_schedule",
]
