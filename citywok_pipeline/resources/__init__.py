"""ConfigurableResources: media sources, the catalog, the artefact store, the snapshot directory."""

from .artefacts import (
    ArtefactNotFoundError,
    ArtefactStore,
    LocalArtefactStore,
    S3ArtefactStore,
    StoredArtefact,
)
from .catalog import CatalogResource
from .media import SeasonFoldersResource, SourceScan
from .snapshots import SnapshotDirectoryResource
from .transcriber import TranscriberResource

__all__ = [
    "ArtefactNotFoundError",
    "ArtefactStore",
    "CatalogResource",
    "LocalArtefactStore",
    "S3ArtefactStore",
    "SeasonFoldersResource",
    "SnapshotDirectoryResource",
    "SourceScan",
    "StoredArtefact",
    "TranscriberResource",
]
