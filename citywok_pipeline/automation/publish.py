"""Publishing on its own: ``published_version`` after shards change, at most once per window, and
a check that says when the served version has fallen behind the shards.

The condition: no publish and no shard build in progress, a ``season_snapshot`` partition
built after the latest published version, and the last publish started more than
``every_minutes`` ago (:class:`PublishDue`, which reads the instance: the sensor evaluates on the
code server). A burst of season rebuilds is one publish once they finish.

``published_version_is_current`` fails when a shard has waited unpublished longer than the lag
limit. ``published_version_freshness_sensor`` evaluates it every minute and reports the result
when it changes (a runless check evaluation: no run per minute); it can also be executed from
the UI like any check.
"""

import datetime
import json
import time
import warnings
from dataclasses import dataclass

import dagster as dg

PUBLISHED = dg.AssetKey("published_version")
SHARDS = dg.AssetKey("season_snapshot")
FRESHNESS_CHECK = "published_version_is_current"
DEFAULT_EVERY_MINUTES = 10
DEFAULT_LAG_MINUTES = 30


class PublishDue(dg.AutomationCondition):
    """True when a ``season_snapshot`` partition was built after the latest published version
    and the last publish (attempt or success) started more than ``minutes`` ago.

    A status read from the instance, not an event: a shard built while a publish runs is
    still waiting when it ends, and a failing publish is retried once per ``minutes``.
    """

    def __init__(self, minutes: int) -> None:
        if minutes < 1:
            raise ValueError(f"the publish interval must be at least 1 minute, got {minutes}")
        self._minutes = minutes

    @property
    def name(self) -> str:
        return f"publish_due(every {self._minutes} min)"

    @property
    def description(self) -> str:
        return (
            f"a shard was rebuilt after the latest version, and the last publish started more "
            f"than {self._minutes} min ago"
        )

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context=context, true_subset=candidates)
        instance = context.asset_graph_view.instance
        now = context.evaluation_time.timestamp()
        lag = publish_lag(instance, now=now)
        last = last_publish_started(instance)
        due = lag.waiting_since is not None and (last is None or now - last >= self._minutes * 60)
        return dg.AutomationResult(
            context=context, true_subset=candidates if due else context.get_empty_subset()
        )


def last_publish_started(instance: dg.DagsterInstance) -> float | None:
    """When the latest publish began: its run's creation (a run that failed counts), else its
    materialisation."""
    times = []
    planned = instance.get_latest_planned_materialization_info(PUBLISHED)
    if planned is not None:
        run = instance.get_run_record_by_id(planned.run_id)
        if run is not None and run.create_timestamp is not None:
            times.append(run.create_timestamp.timestamp())
    latest = instance.get_latest_materialization_event(PUBLISHED)
    if latest is not None:
        times.append(latest.timestamp)
    return max(times) if times else None


def publish_condition(every_minutes: int = DEFAULT_EVERY_MINUTES) -> dg.AutomationCondition:
    """Publish after shards change, when no shard is being built and no publish runs, at most
    once per ``every_minutes``."""
    return (
        ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & PublishDue(every_minutes)
    ).with_label(f"publish after shards change, at most every {every_minutes} min")


def publish_sensor() -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates ``published_version``'s condition (on the code server: the
    throttle reads the instance)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # use_user_code_server, as the catch-up
        return dg.AutomationConditionSensorDefinition(
            "publish_automation_sensor",
            target=dg.AssetSelection.assets(PUBLISHED),
            use_user_code_server=True,
            minimum_interval_seconds=30,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description="Publishes a new version after season shards change, at most once per CITYWOK_PUBLISH_EVERY_MINUTES.",
        )


@dataclass(frozen=True)
class PublishLag:
    """How far the latest published version is behind the shards."""

    version: str | None
    published_at: float | None
    waiting_since: float | None  # the first shard built after that version, if any
    waiting_season: str | None
    now: float

    @property
    def behind_s(self) -> float:
        return 0.0 if self.waiting_since is None else max(0.0, self.now - self.waiting_since)

    def passed(self, limit_s: float) -> bool:
        return self.behind_s <= limit_s


def _iso(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def publish_lag(instance: dg.DagsterInstance, *, now: float | None = None) -> PublishLag:
    """The latest ``published_version`` materialisation and the first ``season_snapshot`` one
    after it, from the instance's event log."""
    latest = instance.fetch_materializations(PUBLISHED, limit=1).records
    after = latest[0].storage_id if latest else None
    waiting = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SHARDS, after_storage_id=after), limit=1, ascending=True
    ).records
    version = None
    if latest and latest[0].asset_materialization is not None:
        value = latest[0].asset_materialization.metadata.get("version")
        version = str(value.value) if value is not None else None
    return PublishLag(
        version=version,
        published_at=latest[0].timestamp if latest else None,
        waiting_since=waiting[0].timestamp if waiting else None,
        waiting_season=waiting[0].partition_key if waiting else None,
        now=time.time() if now is None else now,
    )


def lag_evaluation(lag: PublishLag, limit_s: float) -> dg.AssetCheckEvaluation:
    """The freshness check's result for ``lag``, with what a user needs to see why."""
    if lag.waiting_since is None:
        description = f"every shard is in the latest version ({lag.version or 'none yet'})"
    else:
        description = (
            f"{lag.waiting_season} was rebuilt {lag.behind_s / 60:.0f} min ago and is not "
            f"published yet (limit {limit_s / 60:.0f} min)"
        )
    return dg.AssetCheckEvaluation(
        asset_key=PUBLISHED,
        check_name=FRESHNESS_CHECK,
        passed=lag.passed(limit_s),
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "latest_version": lag.version or "",
            "published_at": _iso(lag.published_at),
            "unpublished_since": _iso(lag.waiting_since),
            "unpublished_season": lag.waiting_season or "",
            "behind_s": dg.MetadataValue.float(round(lag.behind_s, 1)),
            "limit_s": dg.MetadataValue.float(float(limit_s)),
        },
    )


def freshness_check(limit_s: float) -> dg.AssetChecksDefinition:
    """``published_version_is_current`` as a check that can be executed (publish runs include it)."""

    @dg.asset_check(
        asset=PUBLISHED,
        name=FRESHNESS_CHECK,
        blocking=False,
        description=f"Fails when a rebuilt season shard has waited unpublished longer than {limit_s / 60:.0f} min.",
    )
    def published_version_is_current(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        e = lag_evaluation(publish_lag(context.instance), limit_s)
        return dg.AssetCheckResult(
            passed=e.passed, severity=e.severity, description=e.description, metadata=e.metadata
        )

    return published_version_is_current


def freshness_sensor(limit_s: float) -> dg.SensorDefinition:
    """Evaluates ``published_version_is_current`` every minute; reports it when it changes."""

    @dg.sensor(
        name="published_version_freshness_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Fails published_version_is_current when a rebuilt shard waits unpublished longer than {limit_s / 60:.0f} min.",
    )
    def published_version_freshness_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult:
        lag = publish_lag(context.instance)
        evaluation = lag_evaluation(lag, limit_s)
        state = json.dumps([evaluation.passed, lag.version, lag.waiting_since])
        if state == context.cursor:
            return dg.SensorResult(skip_reason=evaluation.description)
        return dg.SensorResult(asset_events=[evaluation], cursor=state)

    return published_version_freshness_sensor
