"""The nightly catch-up: declarative automation that retries what is missing or failed, as
one backfill.

Each per-video asset carries the condition :func:`catch_up_condition`: true, on the first
evaluation after the cron tick, for the partitions that are missing or whose latest run
failed, that no run or backfill has in progress, and that the catalog knows (the newest
``limit`` of them). ``video_catch_up_sensor`` evaluates it; when a tick requests more than one
partition it emits one backfill (``emit_backfills``), so the night's work is one entry on the
Backfills page, under the instance's ``dagster/backfill`` limits, with progress and cancel.

The catalog part is Python (:class:`KnownNewestVideos`), so the sensor evaluates on the code
server (``use_user_code_server``) rather than in the daemon.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

from ..catalog import VideoRecord
from ..resources import CatalogResource

DEFAULT_CRON = "0 3 * * *"
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class CatchUpChoice:
    """Which candidate partitions a night takes, and which it leaves."""

    chosen: tuple[str, ...]
    orphans: tuple[str, ...]
    deferred: tuple[str, ...]


def choose_newest_known(
    keys: Iterable[str], videos: Mapping[str, VideoRecord], *, limit: int
) -> CatchUpChoice:
    """The newest ``limit`` of ``keys`` that the catalog holds as present videos.

    Newest by the catalog's ``mtime_ns`` (publication time for YouTube, file mtime for
    folders), then by when the video was found, then by key. A key the catalog does not hold
    (a partition made by "Add a partition" in the UI, or one whose video was removed) is an
    orphan: never chosen.
    """
    if limit < 0:
        raise ValueError(f"the catch-up limit must be >= 0, got {limit}")
    known: list[VideoRecord] = []
    orphans: list[str] = []
    for key in sorted(set(keys)):
        video = videos.get(key)
        if video is None or video.removed:
            orphans.append(key)
        else:
            known.append(video)
    known.sort(key=lambda v: (v.mtime_ns, v.found_at, v.episode_id), reverse=True)
    ordered = tuple(v.episode_id for v in known)
    return CatchUpChoice(ordered[:limit], tuple(orphans), ordered[limit:])


class KnownNewestVideos(dg.AutomationCondition):
    """True for the newest ``limit`` candidate video partitions the catalog knows; orphans
    and the rest are logged."""

    def __init__(self, catalog: CatalogResource, limit: int) -> None:
        self._catalog = catalog
        self._limit = limit

    @property
    def name(self) -> str:
        return f"known_newest_videos(limit={self._limit})"

    @property
    def description(self) -> str:
        return f"the catalog holds the video; the newest {self._limit} candidates"

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context=context, true_subset=candidates)
        keys = candidates.expensively_compute_partition_keys()
        # Resolved like a step's resource, so a catalog configured by EnvVar works here too.
        with dg.build_resources({"catalog": self._catalog}) as resources:
            videos = {v.episode_id: v for v in resources.catalog.open().videos()}
        choice = choose_newest_known(keys, videos, limit=self._limit)
        asset = context.key.to_user_string()
        if choice.orphans:
            context.log.warning(
                f"{asset}: skipped {len(choice.orphans)} partition(s) the catalog does not hold "
                f"(orphans, deleted by media_scan_sensor): {', '.join(choice.orphans[:20])}"
            )
        if choice.deferred:
            context.log.info(
                f"{asset}: {len(choice.chosen)} newest taken, {len(choice.deferred)} left for "
                "the next night"
            )
        return dg.AutomationResult(
            context=context,
            true_subset=candidates.compute_intersection_with_partition_keys(set(choice.chosen)),
        )


def catch_up_condition(
    catalog: CatalogResource, *, cron: str = DEFAULT_CRON, limit: int = DEFAULT_LIMIT
) -> dg.AutomationCondition:
    """Missing or failed, not in progress, known to the catalog: once per ``cron`` tick."""
    return (
        dg.AutomationCondition.cron_tick_passed(cron)
        & (dg.AutomationCondition.missing() | dg.AutomationCondition.execution_failed())
        & ~dg.AutomationCondition.in_progress()
        & KnownNewestVideos(catalog, limit)
    ).with_label(f"nightly catch-up ({cron} UTC, newest {limit})")


def video_catch_up_sensor(target: dg.AssetSelection) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates the catch-up condition of ``target`` every minute."""
    with warnings.catch_warnings():
        # use_user_code_server is beta in Dagster 1.13: the catalog part needs it (see the README).
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _catch_up_sensor(target)


def _catch_up_sensor(target: dg.AssetSelection) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "video_catch_up_sensor",
        target=target,
        use_user_code_server=True,
        emit_backfills=True,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        run_tags={"citywok/backfill": "nightly"},
        description=(
            "The nightly catch-up: per-video partitions missing or failed, newest first, as one "
            "backfill."
        ),
    )
