"""Which uploads are new: decided by the partition store, filtered, newest first, capped."""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from .feed import Upload


@dataclass(frozen=True, kw_only=True)
class UploadOptions:
    """What users choose: skip shorts and live streams, at most ``max_new`` new videos per tick."""

    skip_shorts: bool = True
    skip_live: bool = True
    max_new: int = 10

    def __post_init__(self) -> None:
        if self.max_new < 1:
            raise ValueError(
                f"max_new (new videos per tick) must be at least 1, got {self.max_new}"
            )


@dataclass(frozen=True)
class UploadsPlan:
    """``new``: newest first, at most ``max_new``; ``deferred``: new but over the cap (next
    tick); ``skipped``: ``(video_id, reason)`` for uploads left out by the options."""

    new: tuple[Upload, ...] = ()
    deferred: tuple[Upload, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()


def plan_uploads(
    uploads: Iterable[Upload], *, known: Set[str], options: UploadOptions = UploadOptions()
) -> UploadsPlan:
    """The uploads whose episode (``yt-<videoId>``) is not in ``known``, the instance's video
    partitions: a reset cursor or a feed that repeats itself never re-ingests a video, and one
    that drops off the feed is never lost once it has its partition."""
    seen: set[str] = set()
    candidates: list[Upload] = []
    skipped: list[tuple[str, str]] = []
    for upload in uploads:
        if upload.video_id in seen or upload.episode_id in known:
            continue
        seen.add(upload.video_id)
        if options.skip_shorts and upload.is_short:
            skipped.append((upload.video_id, "a short (skip_shorts)"))
        elif options.skip_live and upload.is_live:
            skipped.append((upload.video_id, f"a live stream ({upload.live_status}; skip_live)"))
        else:
            candidates.append(upload)
    # Stable sort: uploads without a date keep the listing's order (newest first) after dated ones.
    candidates.sort(key=lambda u: u.published, reverse=True)
    return UploadsPlan(
        new=tuple(candidates[: options.max_new]),
        deferred=tuple(candidates[options.max_new :]),
        skipped=tuple(skipped),
    )
