"""The blob stores as resources: thin wrappers over :mod:`citywok_pipeline.blobstore`.

``ArtefactStore`` (the per-video artefacts and season shards) and ``PublishedVersionsResource``
(manifests, content-addressed shards and ``latest.json``) share one bucket URL: artefacts live
under ``<prefix>/artefacts/``, the versions beside them. Both open the URL with
:func:`~citywok_pipeline.blobstore.open_store`.

The S3 settings are a nested dagster-aws ``S3Resource`` (the UI shows them, ``dg.EnvVar`` fills
them), but the client comes from :meth:`~citywok_pipeline.blobstore.S3Settings.client`:
``S3Resource.get_client()`` takes no botocore config, and R2 needs checksums
``when_required`` (only the environment variables ``AWS_REQUEST_CHECKSUM_CALCULATION`` and
``AWS_RESPONSE_CHECKSUM_VALIDATION`` would give it that; deploy/ sets them for other tools).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from ..blobstore import BlobStore, S3Settings, Source, StoredBlob, open_store
from ..settings import citywok_home


def s3_settings(s3: S3Resource | None) -> S3Settings | None:
    """The blob store's S3 settings from a dagster-aws ``S3Resource`` (None: none given)."""
    if s3 is None:
        return None
    return S3Settings(
        endpoint_url=s3.endpoint_url, region_name=s3.region_name,
        aws_access_key_id=s3.aws_access_key_id, aws_secret_access_key=s3.aws_secret_access_key,
        aws_session_token=s3.aws_session_token, profile_name=s3.profile_name,
        use_ssl=s3.use_ssl, verify=s3.verify, max_attempts=s3.max_attempts,
    )  # fmt: skip


class BucketResource(dg.ConfigurableResource):
    """A bucket URL and how to reach it; the resources below open their store from it."""

    bucket_url: str | None = Field(
        default=None, description="file:///path or s3://bucket/prefix; unset: under $CITYWOK_HOME."
    )
    s3: S3Resource | None = Field(
        default=None, description="The S3 endpoint, region and keys (R2: region 'auto')."
    )

    _store: Any = PrivateAttr(default=None)

    def _open(self, default_folder: str, prefix: str) -> BlobStore:
        if self._store is None:
            if self.bucket_url:
                store = open_store(self.bucket_url, s3_settings(self.s3))
                self._store = store.child(prefix) if prefix else store
            else:
                self._store = open_store((citywok_home() / default_folder).as_uri())
        return self._store  # type: ignore[no-any-return]


class ArtefactStore(BucketResource):
    """Where per-video artefacts and season shards are kept: ``<bucket_url>/artefacts/``, or
    ``$CITYWOK_HOME/artefacts`` when no bucket URL is given."""

    def open(self) -> BlobStore:
        return self._open("artefacts", "artefacts")

    # The store's calls the assets make, on the resource itself.

    def get(self, key: str) -> bytes:
        return self.open().get(key)

    def put(self, key: str, source: Source) -> StoredBlob:
        return self.open().put(key, source)

    def exists(self, key: str) -> bool:
        return self.open().exists(key)

    def delete(self, key: str) -> None:
        self.open().delete(key)

    def uri(self, key: str) -> str:
        return self.open().uri(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.open().list(prefix)]
