"""ConfigurableResources: media sources, the catalog, the artefact store, the snapshot directory."""

from .artefacts import ArtefactStore, BucketResource
from .catalog import CatalogResource
from .media import SeasonFoldersResource, SourceScan
from .snapshots import SnapshotDirectoryResource
from .transcriber import TranscriberResource
from .youtube import YouTubeResource

__all__ = [
    "ArtefactStore",
    "BucketResource",
    "CatalogResource",
    "SeasonFoldersResource",
    "SnapshotDirectoryResource",
    "SourceScan",
    "TranscriberResource",
    "YouTubeResource",
]
