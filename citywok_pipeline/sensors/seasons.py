"""season_snapshot_sensor: a season's shard is rebuilt when its videos changed."""

import dagster as dg

from ..assets import season_snapshot, season_snapshot_job
from ..assets.partitions import season_partitions
from ..catalog import plan_seasons
from ..resources import CatalogResource

SEASON_TAG = "citywok/season"
# A run in one of these may still write its season's shard.
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def seasons_being_built(instance: dg.DagsterInstance) -> set[str]:
    """Seasons with a season_snapshot run queued or running: the sensor's, or one launched by
    hand or a backfill (those carry the partition tag, not the season tag)."""
    busy: set[str] = set()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        if SEASON_TAG in run.tags:
            busy.add(run.tags[SEASON_TAG])
        elif season_snapshot.key in (run.asset_selection or ()) and run.tags.get(
            "dagster/partition"
        ):
            busy.add(run.tags["dagster/partition"])
    return busy


@dg.sensor(
    job=season_snapshot_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def season_snapshot_sensor(
    context: dg.SensorEvaluationContext, catalog: CatalogResource
) -> dg.SensorResult:
    """Requests a season's shard when one of its videos was fingerprinted, re-fingerprinted or removed since the last build, and none is queued or running."""
    cat = catalog.open()
    busy = seasons_being_built(context.instance)
    requests = plan_seasons(cat.videos(include_removed=True), cat.season_builds(), in_progress=busy)
    if not requests:
        waiting = f" ({len(busy)} being built)" if busy else ""
        return dg.SensorResult(skip_reason=f"every season's shard is up to date{waiting}")
    known = set(context.instance.get_dynamic_partitions(season_partitions.name))
    missing = [r.season for r in requests if r.season not in known]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=r.run_key,
                partition_key=r.season,
                # One build per season at a time (deploy/dagster-postgres.yaml limits this tag).
                tags={SEASON_TAG: r.season},
            )
            for r in requests
        ],
        dynamic_partitions_requests=[season_partitions.build_add_request(missing)]
        if missing
        else [],
    )
