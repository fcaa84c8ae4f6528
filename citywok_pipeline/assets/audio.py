"""The media source and the decoded soundtrack of each video."""

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from ..artefacts import data_version, encode_flac, png_markdown, waveform_png
from ..catalog import Catalog, VideoRecord
from ..files import file_sha256
from ..fingerprint.audio import DecodeError, decode
from ..resources import ArtefactStore, CatalogResource, SeasonFoldersResource, YouTubeResource
from ..youtube import is_youtube_episode, video_id_of
from .partitions import (
    AUDIO_CODE_VERSION,
    PARAMS,
    RETRY,
    raw_audio_key,
    stop_if_cancelled,
    video_partitions,
)
from .youtube import youtube_audio_file


@dg.observable_source_asset(
    description="The video's media file (in a season folder, or a YouTube video), observed by media_scan_sensor.",
    partitions_def=video_partitions,
    group_name="videos",
    tags={"dagster/kind/file": ""},
)
def source_media(
    context: dg.OpExecutionContext, media: SeasonFoldersResource, catalog: CatalogResource
) -> dg.DataVersionsByPartition:
    # What media_scan_sensor and youtube_uploads_sensor report for each video they find; run
    # by hand ("Observe sources"), it observes every partition at once.
    versions = {
        v.episode_id: v.source_uri
        for v in catalog.open().videos()
        if is_youtube_episode(v.episode_id)
    }
    versions.update({f.episode_id: f"{f.size}-{f.mtime_ns}" for f in media.scan().files})
    known = set(context.instance.get_dynamic_partitions(video_partitions.name))
    return dg.DataVersionsByPartition(
        {eid: dg.DataVersion(v) for eid, v in versions.items() if eid in known}
    )


def known_video(catalog: Catalog, context: dg.AssetExecutionContext) -> VideoRecord | None:
    """The catalog's record of the partition's present video.

    None for an orphan partition (one the catalog does not hold: made with "Add a partition"
    in the UI): the step yields nothing, so the run succeeds with nothing materialised and
    the asset's status is not turned to failed; media_scan_sensor deletes the partition. A
    video removed from the media source fails with the reason.
    """
    stop_if_cancelled(context)  # a retry after a cancel's interrupt (see partitions.RETRY)
    episode_id = context.partition_key
    video = catalog.video(episode_id)
    if video is None:
        context.log.warning(
            f"{episode_id}: orphan partition, not in the catalog: skipped (media_scan_sensor "
            "deletes it; sensors add videos with their catalog record)"
        )
        return None
    if video.removed:
        raise dg.Failure(
            description=f"{episode_id}: {video.source} was removed from the media source at {video.removed_at}",
            allow_retries=False,
        )
    return video


@dg.asset(
    partitions_def=video_partitions,
    deps=[source_media],
    code_version=AUDIO_CODE_VERSION,
    group_name="videos",
    kinds={"ffmpeg", "flac"},
    retry_policy=RETRY,
    output_required=False,  # an orphan partition yields nothing (see known_video)
)
def raw_audio(
    context: dg.AssetExecutionContext,
    media: SeasonFoldersResource,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    youtube: YouTubeResource,
) -> Iterator[dg.MaterializeResult]:
    """The video's soundtrack, decoded once to mono 16-bit FLAC at the fingerprint sample rate."""
    cat = catalog.open()
    video = known_video(cat, context)
    if video is None:
        return
    with tempfile.TemporaryDirectory(prefix="citywok-audio-") as work:
        if is_youtube_episode(video.episode_id):
            path, fetched = youtube_audio_file(context, youtube, artefacts, video, Path(work))
        else:
            path, fetched = media.locate(video.source), {}
        result = _decode_and_store(context, cat, artefacts, video, path, fetched)
    if fetched.get("downloaded"):
        # Only once the audio is stored: an interrupted run downloads again.
        youtube.archive.add(video_id_of(video.episode_id))
    yield result


def _decode_and_store(
    context: dg.AssetExecutionContext,
    cat: Catalog,
    artefacts: ArtefactStore,
    video: VideoRecord,
    path: Path,
    fetched: dict[str, Any],
) -> dg.MaterializeResult:
    started = time.perf_counter()
    try:
        samples = decode(path, sample_rate=PARAMS.sample_rate)
    except DecodeError as exc:
        raise dg.Failure(
            description=f"{video.episode_id}: cannot decode {video.source}: {exc.reason}",
            metadata={"source": video.source, "reason": exc.reason},
            allow_retries=False,
        ) from exc
    decoded = time.perf_counter()
    flac = encode_flac(samples, sample_rate=PARAMS.sample_rate)
    encoded = time.perf_counter()
    stored = artefacts.put(raw_audio_key(video.episode_id), flac)
    sha256 = file_sha256(path)
    duration_s = round(samples.size / PARAMS.sample_rate, 3)
    version = data_version(flac)
    cat.record_audio(video.episode_id, sha256=sha256, duration_s=duration_s, audio_version=version)
    work_s = encoded - started
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "source": dg.MetadataValue.path(video.source),
            "source_sha256": sha256,
            "source_bytes": path.stat().st_size,
            "duration_s": dg.MetadataValue.float(duration_s),
            "sample_rate": PARAMS.sample_rate,
            "flac_bytes": stored.size,
            "flac_kbit_per_s": dg.MetadataValue.float(
                round(stored.size * 8 / 1000 / max(duration_s, 1e-9), 1)
            ),
            "decode_s": dg.MetadataValue.float(round(decoded - started, 3)),
            "encode_s": dg.MetadataValue.float(round(encoded - decoded, 3)),
            "realtime_x": dg.MetadataValue.float(round(duration_s / max(work_s, 1e-9), 1)),
            "artefact": dg.MetadataValue.url(stored.uri),
            "waveform": dg.MetadataValue.md(png_markdown(waveform_png(samples), "waveform")),
            **fetched,
        },
    )
