"""Landmark fingerprints of each video."""

import time
from collections.abc import Iterator

import dagster as dg

from ..artefacts import expected_postings, pack_fingerprints, params_version
from ..blobstore import BlobNotFoundError
from ..fingerprint.audio import DecodeError, decode
from ..fingerprint.matcher import fingerprint
from ..resources import ArtefactStore, CatalogResource
from .audio import known_video, raw_audio
from .partitions import (
    FINGERPRINTS_CODE_VERSION,
    PARAMS,
    RETRY,
    fingerprints_key,
    raw_audio_key,
    video_partitions,
)


@dg.asset(
    partitions_def=video_partitions,
    deps=[raw_audio],
    code_version=FINGERPRINTS_CODE_VERSION,
    group_name="videos",
    kinds={"numpy"},
    retry_policy=RETRY,
    output_required=False,  # an orphan partition yields nothing (see known_video)
)
def fingerprints(
    context: dg.AssetExecutionContext, catalog: CatalogResource, artefacts: ArtefactStore
) -> Iterator[dg.MaterializeResult]:
    """The video's landmark hashes and anchor times, packed and zstd-compressed."""
    cat = catalog.open()
    video = known_video(cat, context)
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
    started = time.perf_counter()
    try:
        samples = decode(flac, sample_rate=PARAMS.sample_rate, label=artefacts.uri(key))
    except DecodeError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: stored raw audio is unreadable ({exc}); re-materialise raw_audio",
            allow_retries=False,
        ) from exc
    hashes = fingerprint(samples, params=PARAMS)
    elapsed = time.perf_counter() - started
    blob, version = pack_fingerprints(hashes, episode_id=video.episode_id, params=PARAMS)
    stored = artefacts.put(fingerprints_key(video.episode_id), blob)
    cat.record_fingerprints(video.episode_id, version=version)
    duration_s = samples.size / PARAMS.sample_rate
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "hashes": len(hashes),
            "postings": expected_postings(hashes),
            "hashes_per_s": dg.MetadataValue.float(round(len(hashes) / max(duration_s, 1e-9), 1)),
            "duration_s": dg.MetadataValue.float(round(duration_s, 3)),
            "bytes": stored.size,
            "bytes_per_hash": dg.MetadataValue.float(round(stored.size / max(len(hashes), 1), 2)),
            "fingerprint_s": dg.MetadataValue.float(round(elapsed, 3)),
            "realtime_x": dg.MetadataValue.float(round(duration_s / max(elapsed, 1e-9), 1)),
            "params_version": params_version(PARAMS),
            "artefact": dg.MetadataValue.url(stored.uri),
        },
    )
