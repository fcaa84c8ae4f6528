"""Each video's transcript segments in the transcript database (present when one is configured)."""

import time
from collections.abc import Iterator

import dagster as dg

from ..artefacts import ArtefactFormatError
from ..blobstore import BlobNotFoundError
from ..resources import ArtefactStore, CatalogResource
from ..resources.postgres import PostgresResource
from ..transcripts.artefact import unpack_transcript
from ..transcripts.embeddings import unpack_embeddings
from ..transcripts.errors import TranscriptError
from ..transcripts.postgres import DatabaseUnavailableError, searchable_segments, upsert_video
from .audio import known_video
from .partitions import RETRY, segment_embeddings_key, transcript_key, video_partitions
from .transcripts import transcript

# 1: videos + transcript_segments (vector(dim), HNSW cosine, tsvector keyword filter).
TRANSCRIPT_SEGMENTS_CODE_VERSION = "pgvector-1"


@dg.asset(
    partitions_def=video_partitions,
    deps=[transcript, dg.AssetKey("segment_embeddings")],
    code_version=TRANSCRIPT_SEGMENTS_CODE_VERSION,
    group_name="videos",
    kinds={"postgres"},
    retry_policy=RETRY,
    output_required=False,  # an orphan partition yields nothing (see known_video)
)
def transcript_segments(
    context: dg.AssetExecutionContext,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    database: PostgresResource,
) -> Iterator[dg.MaterializeResult]:
    """The video's segments and their vectors in Postgres (pgvector), replacing earlier rows."""
    video = known_video(catalog.open(), context)
    if video is None:
        return
    episode = video.episode_id
    try:
        t_key, e_key = transcript_key(episode), segment_embeddings_key(episode)
        spoken = unpack_transcript(artefacts.get(t_key), label=artefacts.uri(t_key))
        embedded = unpack_embeddings(artefacts.get(e_key), label=artefacts.uri(e_key))
    except BlobNotFoundError as exc:
        raise dg.Failure(
            description=f"{episode}: {exc}; materialise transcript and segment_embeddings first",
            allow_retries=False,
        ) from exc
    except (ArtefactFormatError, ValueError) as exc:
        raise dg.Failure(
            description=f"{episode}: a stored artefact is unreadable ({exc}); re-materialise it",
            allow_retries=False,
        ) from exc
    texts = tuple(" ".join(s.text.split()) for s in searchable_segments(spoken))
    if texts != embedded.texts:
        raise dg.Failure(
            description=f"{episode}: the segment embeddings were made from another transcript "
            f"({len(embedded.texts)} segments, the transcript has {len(texts)}); "
            "re-materialise segment_embeddings",
            allow_retries=False,
        )
    started = time.perf_counter()
    try:
        with database.connect() as conn:
            written = upsert_video(
                conn,
                episode_id=episode,
                season=video.season,
                source=video.source,
                title=video.title,
                duration_s=video.duration_s or spoken.duration_s,
                transcript=spoken,
                vectors=embedded.vectors.dequantize(),
                model=embedded.model,
            )
    except DatabaseUnavailableError as exc:  # retried by RETRY: the server may be restarting
        raise dg.Failure(description=f"{episode}: {exc}", allow_retries=True) from exc
    except TranscriptError as exc:  # a schema that refuses these vectors: retrying cannot help
        raise dg.Failure(description=f"{episode}: {exc}", allow_retries=False) from exc
    elapsed = time.perf_counter() - started
    yield dg.MaterializeResult(
        metadata={
            "segments": written.segments,
            "rows_replaced": written.replaced,
            "model": embedded.model,
            "dim": embedded.dim,
            "language": spoken.language,
            "database": database.host,
            "write_s": dg.MetadataValue.float(round(elapsed, 3)),
        },
    )
