"""Sensors and schedules: the media scan, YouTube uploads and listings, season shards."""

from .media import media_scan_sensor
from .schedules import youtube_listing_schedule
from .seasons import season_snapshot_sensor
from .youtube import youtube_channel_sync_sensor, youtube_uploads_sensor

SENSORS = [
    media_scan_sensor,
    season_snapshot_sensor,
    youtube_uploads_sensor,
    youtube_channel_sync_sensor,
]
SCHEDULES = [youtube_listing_schedule]

__all__ = [
    "SCHEDULES",
    "SENSORS",
    "media_scan_sensor",
    "season_snapshot_sensor",
    "youtube_channel_sync_sensor",
    "youtube_listing_schedule",
    "youtube_uploads_sensor",
]
