"""season_snapshot_sensor: a season's shard is rebuilt when its videos changed."""

import dagster as dg

from ..assets import season_snapshot_job
from ..assets.partitions import season_partitions
from ..catalog import plan_seasons
from ..resources import CatalogResource


@dg.sensor(
    job=season_snapshot_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def season_snapshot_sensor(
    context: dg.SensorEvaluationContext, catalog: CatalogResource
) -> dg.SensorResult:
    """Requests a season's shard when one of its videos was fingerprinted, re-fingerprinted or removed since the last build."""
    cat = catalog.open()
    requests = plan_seasons(cat.videos(include_removed=True), cat.season_builds())
    if not requests:
        return dg.SensorResult(skip_reason="every season's shard is up to date")
    known = set(context.instance.get_dynamic_partitions(season_partitions.name))
    missing = [r.season for r in requests if r.season not in known]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=r.run_key,
                partition_key=r.season,
                # One build per season at a time (deploy/dagster-postgres.yaml limits this tag).
                tags={"citywok/season": r.season},
            )
            for r in requests
        ],
        dynamic_partitions_requests=[season_partitions.build_add_request(missing)]
        if missing
        else [],
    )
