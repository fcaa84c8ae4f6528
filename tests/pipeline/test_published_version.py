"""The published_version asset (publishing the shards in the artefact store) and the retention
job, on a local folder and on SeaweedFS."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from citywok_pipeline.assets.partitions import shard_key
from citywok_pipeline.assets.publishing import prune_versions_job, published_version
from citywok_pipeline.publishing import list_versions, read_latest
from citywok_pipeline.resources import ArtefactStore
from citywok_pipeline.resources.publishing import PublishedVersionsResource
from citywok_pipeline.snapshot import shard_paths
from tests.conftest import S3Server
from tests.publishing.conftest import build_season


def materialise(snapshot: Path, versions: PublishedVersionsResource) -> dict[str, object]:
    """Store the shards of ``snapshot`` as season_snapshot would, then publish from the store."""
    artefacts = ArtefactStore(bucket_url=versions.bucket_url, s3=versions.s3)
    for shard in shard_paths(snapshot):
        artefacts.put(shard_key(shard.stem), shard)
    result = dg.materialize(
        [published_version], resources={"artefacts": artefacts, "versions": versions}
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("published_version")
    return {k: v.value for k, v in mat.metadata.items()}


def test_published_version_uploads_changed_shards_and_skips_an_unchanged_snapshot(
    seaweedfs: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    versions = PublishedVersionsResource(
        bucket_url=f"s3://{s3_bucket}/citywok",
        s3=S3Resource(endpoint_url=seaweedfs.endpoint_url, aws_access_key_id=seaweedfs.access_key,
                      aws_secret_access_key=seaweedfs.secret_key),
    )  # fmt: skip
    snapshot = tmp_path / "snapshot"
    build_season(snapshot, "alpha-s01", (1, 2))
    build_season(snapshot, "beta-s01", (3,))
    first = materialise(snapshot, versions)
    assert first["created"] is True and sorted(first["uploaded"]) == [
        "alpha-s01.lmdb",
        "beta-s01.lmdb",
    ]  # type: ignore[arg-type]
    assert first["episodes"] == 3 and str(first["manifest"]).startswith(f"s3://{s3_bucket}/")

    unchanged = materialise(snapshot, versions)
    assert unchanged["created"] is False and unchanged["version"] == first["version"]

    build_season(snapshot, "beta-s01", (3, 4))
    second = materialise(snapshot, versions)
    assert second["uploaded"] == ["beta-s01.lmdb"] and second["reused"] == ["alpha-s01.lmdb"]
    assert read_latest(versions.bucket()).version == second["version"]  # type: ignore[union-attr]


def test_the_retention_job_keeps_the_newest_versions(tmp_path: Path) -> None:
    versions = PublishedVersionsResource(
        bucket_url=(tmp_path / "bucket").as_uri(), keep=1, grace_s=0
    )
    snapshot = tmp_path / "snapshot"
    for seed in (5, 6):
        build_season(snapshot, "alpha-s01", (1, seed))
        last = materialise(snapshot, versions)["version"]
    assert prune_versions_job.execute_in_process(resources={"versions": versions}).success
    assert list_versions(versions.bucket()) == [last]
    assert len(versions.bucket().list("blobs/")) == 1
