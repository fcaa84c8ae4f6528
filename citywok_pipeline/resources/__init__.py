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
from .youtube import YouTubeResource

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
    "YouTubeResource",
]
