"""Sentence embeddings of each video's transcript segments."""

import time
from collections.abc import Iterator

import dagster as dg

from ..artefacts import ArtefactFormatError
from ..blobstore import BlobNotFoundError
from ..resources import ArtefactStore, CatalogResource
from ..resources.embedder import EmbedderResource
from ..transcripts.artefact import pack_transcript, unpack_transcript
from ..transcripts.embeddings import embed_transcript, pack_embeddings
from ..transcripts.errors import TranscriptError
from .audio import known_video
from .partitions import (
    EMBEDDINGS_CODE_VERSION,
    GPU_OP_TAGS,
    GPU_POOL,
    RETRY,
    segment_embeddings_key,
    transcript_key,
    video_partitions,
)
from .transcripts import transcript


@dg.asset(
    partitions_def=video_partitions,
    deps=[transcript],
    code_version=EMBEDDINGS_CODE_VERSION,
    group_name="videos",
    kinds={"pytorch", "numpy"},
    retry_policy=RETRY,
    output_required=False,  # an orphan partition yields nothing (see known_video)
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
)
def segment_embeddings(
    context: dg.AssetExecutionContext,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    embedder: EmbedderResource,
) -> Iterator[dg.MaterializeResult]:
    """One unit vector per transcript segment, stored with the segment's times and text."""
    cat = catalog.open()
    video = known_video(cat, context)
    if video is None:
        return
    key = transcript_key(video.episode_id)
    try:
        result = unpack_transcript(artefacts.get(key), label=artefacts.uri(key))
    except BlobNotFoundError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: no transcript ({exc}); materialise transcript first",
            allow_retries=False,
        ) from exc
    except ArtefactFormatError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: stored transcript is unreadable ({exc}); re-materialise transcript",
            allow_retries=False,
        ) from exc
    started = time.perf_counter()
    try:
        model = embedder.load()
    except TranscriptError as exc:
        raise dg.Failure(description=f"embedding model: {exc}", allow_retries=False) from exc
    loaded = time.perf_counter()
    embedded = embed_transcript(
        result,
        model,
        episode_id=video.episode_id,
        quantization=embedder.quantization,
        # The transcript's data version, as its asset recorded it (the same JSON hashed).
        transcript_version=pack_transcript(result)[1],
    )
    elapsed = time.perf_counter() - loaded
    blob, version = pack_embeddings(embedded)
    stored = artefacts.put(segment_embeddings_key(video.episode_id), blob)
    cat.record_embeddings(video.episode_id, version=version)
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "segments": len(embedded),
            "model": embedded.model,
            "device": model.device,
            "dim": embedded.dim,
            "quantization": embedded.quantization,
            "model_load_s": dg.MetadataValue.float(round(loaded - started, 3)),
            "embed_s": dg.MetadataValue.float(round(elapsed, 3)),
            "segments_per_s": dg.MetadataValue.float(round(len(embedded) / max(elapsed, 1e-9), 1)),
            "bytes": stored.size,
            "artefact": dg.MetadataValue.url(stored.uri),
        },
    )
