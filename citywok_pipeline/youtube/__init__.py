"""YouTube channels as a media source, without Dagster: feeds, listings, plans, downloads.

- :mod:`.feed`: a channel's Atom feed (the latest 15 uploads), fetched with an ETag.
- :mod:`.listing`: a channel's full upload list through yt-dlp (flat playlist), for the
  reconciliation the feed cannot do.
- :mod:`.plan`: which uploads are new, in which order and how many per tick.
- :mod:`.download`: best audio through yt-dlp, with a download archive, a pause between
  downloads and errors that say whether to give up or retry later.

Video ``dQw4w9WgXcQ`` of channel ``UC...`` is episode ``yt-dQw4w9WgXcQ`` of season
``yt-UC...``: one season per channel.
"""

from .download import (
    DownloadArchive,
    DownloadError,
    RateLimitedError,
    Throttle,
    VideoUnavailableError,
    classify_download_error,
    download_audio,
)
from .feed import (
    DEFAULT_FEED_URL,
    ChannelFeed,
    FeedError,
    FeedFetch,
    FeedRateLimitedError,
    FeedUnavailableError,
    Upload,
    channel_season,
    feed_url,
    fetch_feed,
    is_youtube_episode,
    parse_channel_ids,
    parse_feed,
    video_episode,
    video_id_of,
)
from .listing import (
    ListingFormatError,
    channel_listing_url,
    list_channel,
    listing_from_json,
    listing_to_json,
)
from .plan import UploadOptions, UploadsPlan, plan_uploads

__all__ = [
    "DEFAULT_FEED_URL",
    "ChannelFeed",
    "DownloadArchive",
    "DownloadError",
    "FeedError",
    "FeedFetch",
    "FeedRateLimitedError",
    "FeedUnavailableError",
    "ListingFormatError",
    "RateLimitedError",
    "Throttle",
    "Upload",
    "UploadOptions",
    "UploadsPlan",
    "VideoUnavailableError",
    "channel_listing_url",
    "channel_season",
    "classify_download_error",
    "download_audio",
    "feed_url",
    "fetch_feed",
    "is_youtube_episode",
    "list_channel",
    "listing_from_json",
    "listing_to_json",
    "parse_channel_ids",
    "parse_feed",
    "plan_uploads",
    "video_episode",
    "video_id_of",
]
