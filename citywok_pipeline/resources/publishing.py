"""The bucket published versions go to: a local folder or S3/R2 (see ``publishing/``)."""

from __future__ import annotations

from urllib.parse import urlparse

import dagster as dg
from pydantic import Field

from ..publishing import Bucket, LocalBucket, S3Bucket, s3_client
from ..settings import citywok_home


class PublishedVersionsResource(dg.ConfigurableResource):
    """Where ``published_version`` writes manifests, shards and ``latest.json``.

    ``bucket_url`` is ``s3://bucket/prefix`` (R2: give ``endpoint_url`` and region ``auto``)
    or ``file:///path``; unset, ``$CITYWOK_HOME/published``.
    """

    bucket_url: str | None = Field(default=None, description="s3://bucket/prefix or file:///path.")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (R2, SeaweedFS).")
    region_name: str | None = Field(default=None, description="Region; R2 wants 'auto'.")
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    keep: int = Field(default=5, ge=1, description="Versions kept by prune_versions_job.")
    grace_s: float = Field(
        default=3600.0, ge=0, description="Unreferenced blobs younger than this are kept."
    )

    def bucket(self) -> Bucket:
        if not self.bucket_url:
            return LocalBucket(citywok_home() / "published")
        parsed = urlparse(self.bucket_url)
        if parsed.scheme == "s3":
            return S3Bucket(
                self.bucket_url,
                s3_client(
                    endpoint_url=self.endpoint_url,
                    region_name=self.region_name or ("auto" if self.endpoint_url else None),
                    aws_access_key_id=self.aws_access_key_id,
                    aws_secret_access_key=self.aws_secret_access_key,
                ),
            )
        if parsed.scheme == "file":
            return LocalBucket(parsed.path)
        raise ValueError(
            f"bucket_url must be s3://bucket/prefix or file:///path, got {self.bucket_url!r}"
        )
