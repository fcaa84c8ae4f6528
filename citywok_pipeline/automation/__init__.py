"""Automation: the nightly catch-up of the per-video assets (one backfill a night), publishing
after shards change, the published version's freshness check, and alerts on failed runs.

Built when the code location loads (:func:`automation_settings` reads the environment then,
never at import time): ``CITYWOK_CATCH_UP_CRON`` and ``CITYWOK_CATCH_UP_LIMIT`` (the catch-up),
``CITYWOK_PUBLISH_EVERY_MINUTES`` (the publish window) and ``CITYWOK_PUBLISH_LAG_MINUTES`` (the
freshness limit). The season shards keep their sensor (``sensors/seasons.py``): which videos
make a season is data in the catalog, which no automation condition can follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from ..resources import CatalogResource
from .alerts import AlertWebhookResource, run_failure_alert_sensor
from .catch_up import (
    DEFAULT_CRON,
    DEFAULT_LIMIT,
    KnownNewestVideos,
    catch_up_condition,
    choose_newest_known,
    video_catch_up_sensor,
)
from .publish import (
    DEFAULT_EVERY_MINUTES,
    DEFAULT_LAG_MINUTES,
    PUBLISHED,
    PublishDue,
    freshness_check,
    freshness_sensor,
    publish_condition,
    publish_sensor,
)


@dataclass(frozen=True)
class AutomationSettings:
    """When the catch-up runs (a cron in UTC) and how many partitions of each asset it takes."""

    catch_up_cron: str = DEFAULT_CRON
    catch_up_limit: int = DEFAULT_LIMIT
    publish_every_minutes: int = DEFAULT_EVERY_MINUTES
    publish_lag_minutes: float = DEFAULT_LAG_MINUTES


def automation_settings(env: Mapping[str, str]) -> AutomationSettings:
    """The settings from ``env``; ``ValueError`` naming the variable that is malformed."""
    cron = env.get("CITYWOK_CATCH_UP_CRON") or DEFAULT_CRON
    try:
        dg.AutomationCondition.cron_tick_passed(cron)
    except Exception as exc:  # dagster's check error: the cron does not parse
        raise ValueError(f"CITYWOK_CATCH_UP_CRON is not a cron schedule: {cron!r}") from exc
    limit = _number(env, "CITYWOK_CATCH_UP_LIMIT", DEFAULT_LIMIT, minimum=1)
    every = _number(env, "CITYWOK_PUBLISH_EVERY_MINUTES", DEFAULT_EVERY_MINUTES, minimum=1)
    lag = _number(env, "CITYWOK_PUBLISH_LAG_MINUTES", DEFAULT_LAG_MINUTES, minimum=1)
    return AutomationSettings(
        catch_up_cron=cron,
        catch_up_limit=limit,
        publish_every_minutes=every,
        publish_lag_minutes=lag,
    )


def _number(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Automation:
    """The assets with their conditions, and the sensors and checks that go with them."""

    assets: list[Any]
    sensors: list[dg.SensorDefinition]
    asset_checks: list[dg.AssetChecksDefinition]


def automate(
    assets: Sequence[Any],
    *,
    video_assets: dg.AssetSelection,
    catalog: CatalogResource,
    settings: AutomationSettings,
) -> Automation:
    """``assets`` with the catch-up condition on the per-video ones and the publish condition on
    ``published_version``, and the sensors and checks of the automation."""
    catch_up = catch_up_condition(
        catalog, cron=settings.catch_up_cron, limit=settings.catch_up_limit
    )
    publish = publish_condition(settings.publish_every_minutes)
    keys = video_assets.resolve([a for a in assets if isinstance(a, dg.AssetsDefinition)])

    def with_condition(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key in keys:
            return spec.replace_attributes(automation_condition=catch_up)
        if spec.key == PUBLISHED:
            return spec.replace_attributes(automation_condition=publish)
        return spec

    lag_s = settings.publish_lag_minutes * 60.0
    return Automation(
        assets=list(dg.map_asset_specs(with_condition, assets)),
        sensors=[
            video_catch_up_sensor(video_assets),
            publish_sensor(),
            freshness_sensor(lag_s),
            run_failure_alert_sensor,
        ],
        asset_checks=[freshness_check(lag_s)],
    )


__all__ = [
    "AlertWebhookResource",
    "Automation",
    "AutomationSettings",
    "KnownNewestVideos",
    "PublishDue",
    "automate",
    "automation_settings",
    "catch_up_condition",
    "choose_newest_known",
    "video_catch_up_sensor",
]
