"""The bucket published versions go to (see ``publishing/`` and ``blobstore``)."""

from __future__ import annotations

from pydantic import Field

from ..blobstore import BlobStore
from .artefacts import BucketResource


class PublishedVersionsResource(BucketResource):
    """Where ``published_version`` writes manifests, shards and ``latest.json``: the bucket URL's
    prefix (beside ``artefacts/``), or ``$CITYWOK_HOME/published`` when none is given."""

    keep: int = Field(default=5, ge=1, description="Versions kept by prune_versions_job.")
    grace_s: float = Field(
        default=3600.0, ge=0, description="Unreferenced blobs younger than this are kept."
    )

    def bucket(self) -> BlobStore:
        return self._open("published", "")
