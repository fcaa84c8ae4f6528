"""The published version: every season shard in the bucket, a manifest, ``latest.json``; and
the retention job that deletes old versions."""

import tempfile
from pathlib import Path

import dagster as dg

from ..blobstore import BlobStore
from ..publishing import PublishConflictError, PublishError, prune_versions, publish_snapshot
from ..resources import ArtefactStore
from ..resources.publishing import PublishedVersionsResource
from .partitions import RETRY, SHARDS_PREFIX, stop_if_cancelled
from .snapshots import season_snapshot


@dg.asset(
    deps=[dg.AssetDep(season_snapshot, partition_mapping=dg.AllPartitionMapping())],
    group_name="publishing",
    kinds={"s3"},
    # A publisher that lost the race for latest.json, or a lost connection, tries again.
    retry_policy=RETRY,
)
def published_version(
    context: dg.AssetExecutionContext,
    artefacts: ArtefactStore,
    versions: PublishedVersionsResource,
) -> dg.MaterializeResult:
    """The season shards in the artefact store as an immutable published version, with latest.json pointing at it."""
    stop_if_cancelled(context)  # a retry after a cancel's interrupt (see partitions.RETRY)
    bucket = versions.bucket()
    # The shards as stored, fetched into this step's own temp folder (no local snapshot is
    # read: any machine can publish), verified and described there by publish_snapshot.
    with tempfile.TemporaryDirectory(prefix="citywok-publish-") as tmp:
        fetched = fetch_shards(artefacts.open(), Path(tmp))
        try:
            result = publish_snapshot(tmp, bucket)
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
            "fetched_bytes": fetched,
        },
    )


def fetch_shards(store: BlobStore, into: Path) -> int:
    """Download every season shard the store holds (``shards/<season>.lmdb``) into ``into``;
    the bytes fetched."""
    total = 0
    for obj in store.list(SHARDS_PREFIX):
        name = obj.key[len(SHARDS_PREFIX) :]
        if "/" in name or not name.endswith(".lmdb"):
            continue  # not a season shard (the key itself was checked by the store)
        with open(into / name, "wb") as f:
            store.download(obj.key, f)
            total += f.tell()
    return total


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
    name="prune_versions_schedule",  # unnamed, the UI would call it prune_versions_job_schedule
    job=prune_versions_job,
    cron_schedule="30 4 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

publish_job = dg.define_asset_job(
    "publish_job",
    selection=dg.AssetSelection.assets(published_version),
    description="Publish the current snapshot as a new version (if anything changed).",
)
