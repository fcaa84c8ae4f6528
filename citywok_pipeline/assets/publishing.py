"""The published version: every season shard in the bucket, a manifest, ``latest.json``; and
the retention job that deletes old versions."""

import dagster as dg

from ..publishing import PublishConflictError, PublishError, prune_versions, publish_snapshot
from ..resources.publishing import PublishedVersionsResource
from ..resources.snapshots import SnapshotDirectoryResource
from .snapshots import season_snapshot


@dg.asset(
    deps=[dg.AssetDep(season_snapshot, partition_mapping=dg.AllPartitionMapping())],
    group_name="publishing",
    kinds={"s3"},
)
def published_version(
    context: dg.AssetExecutionContext,
    snapshots: SnapshotDirectoryResource,
    versions: PublishedVersionsResource,
) -> dg.MaterializeResult:
    """The snapshot as an immutable published version, with latest.json pointing at it."""
    bucket = versions.bucket()
    try:
        result = publish_snapshot(snapshots.directory, bucket)
    except PublishConflictError as exc:
        raise dg.Failure(description=str(exc), allow_retries=True) from exc
    except PublishError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    m = result.manifest
    context.log.info(
        f"{'published' if result.created else 'unchanged:'} {result.version}; "
        f"uploaded {list(result.uploaded)}"
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(m.content_id()),
        metadata={
            "version": result.version,
            "created": result.created,
            "uploaded": dg.MetadataValue.json(list(result.uploaded)),
            "reused": dg.MetadataValue.json(list(result.reused)),
            "shards": len(m.shards),
            "episodes": sum(s.episodes for s in m.shards),
            "segments": sum(s.segments for s in m.shards),
            "bytes": sum(s.size for s in m.shards),
            "manifest": dg.MetadataValue.url(bucket.uri(f"versions/{result.version}.json")),
        },
    )


@dg.op
def prune_published_versions(
    context: dg.OpExecutionContext, versions: PublishedVersionsResource
) -> None:
    """Delete versions beyond the newest ``keep`` and the shards no kept manifest references."""
    result = prune_versions(versions.bucket(), keep=versions.keep, grace_s=versions.grace_s)
    context.log.info(
        f"kept {list(result.kept)}; deleted {len(result.deleted_versions)} version(s) and "
        f"{len(result.deleted_blobs)} blob(s)"
    )


@dg.job(description="Retention: keep the newest published versions, delete the rest.")
def prune_versions_job() -> None:
    prune_published_versions()


prune_versions_schedule = dg.ScheduleDefinition(
    job=prune_versions_job,
    cron_schedule="30 4 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

publish_job = dg.define_asset_job(
    "publish_job",
    selection=dg.AssetSelection.assets(published_version),
    description="Publish the current snapshot as a new version (if anything changed).",
)
