"""The transcript of each video: segments with word times, from its raw audio."""

import time
from collections.abc import Iterator

import dagster as dg

from ..blobstore import BlobNotFoundError
from ..fingerprint.audio import DecodeError, decode
from ..resources import ArtefactStore, CatalogResource
from ..resources.transcriber import TranscriberResource
from ..transcripts import TranscriptError
from ..transcripts.artefact import pack_transcript
from ..transcripts.transcriber import SAMPLE_RATE
from .audio import known_video, raw_audio
from .partitions import (
    GPU_OP_TAGS,
    GPU_POOL,
    RETRY,
    TRANSCRIPT_CODE_VERSION,
    raw_audio_key,
    transcript_key,
    video_partitions,
)


@dg.asset(
    partitions_def=video_partitions,
    deps=[raw_audio],
    code_version=TRANSCRIPT_CODE_VERSION,
    group_name="videos",
    kinds={"whisper"},
    retry_policy=RETRY,
    output_required=False,  # an orphan partition yields nothing (see known_video)
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
)
def transcript(
    context: dg.AssetExecutionContext,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    transcriber: TranscriberResource,
) -> Iterator[dg.MaterializeResult]:
    """The video's speech as text: language, segments with word times and speakers when known."""
    video = known_video(catalog.open(), context)
    if video is None:
        return
    key = raw_audio_key(video.episode_id)
    try:
        flac = artefacts.get(key)
    except BlobNotFoundError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: no raw audio ({exc}); materialise raw_audio first",
            allow_retries=False,
        ) from exc
    try:
        samples = decode(flac, sample_rate=SAMPLE_RATE, label=artefacts.uri(key))
    except DecodeError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: stored raw audio is unreadable ({exc}); re-materialise raw_audio",
            allow_retries=False,
        ) from exc
    started = time.perf_counter()
    try:
        model = transcriber.load()
    except TranscriptError as exc:  # configuration: retrying would not help
        raise dg.Failure(
            description=f"{video.episode_id}: no transcriber: {exc}", allow_retries=False
        ) from exc
    loaded = time.perf_counter()
    result = model.transcribe(samples, label=video.episode_id)
    elapsed = time.perf_counter() - loaded
    blob, version = pack_transcript(result)
    stored = artefacts.put(transcript_key(video.episode_id), blob)
    speakers = sorted({s.speaker for s in result.segments if s.speaker})
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "model": result.model,
            "backend": result.backend,
            "device": result.device,
            "language": result.language,
            "duration_s": dg.MetadataValue.float(result.duration_s),
            "segments": len(result.segments),
            "word_count": result.word_count,
            "speakers": len(speakers),
            "model_load_s": dg.MetadataValue.float(round(loaded - started, 3)),
            "transcribe_s": dg.MetadataValue.float(round(elapsed, 3)),
            "real_time_factor": dg.MetadataValue.float(
                round(elapsed / max(result.duration_s, 1e-9), 4)
            ),
            "realtime_x": dg.MetadataValue.float(round(result.duration_s / max(elapsed, 1e-9), 1)),
            "bytes": stored.size,
            "data_version": version,
            "artefact": dg.MetadataValue.url(stored.uri),
            "preview": dg.MetadataValue.md(_preview(result.text)),
        },
    )


def _preview(text: str, limit: int = 300) -> str:
    if not text:
        return "_no speech_"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
