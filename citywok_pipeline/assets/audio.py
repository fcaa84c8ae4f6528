"""The media source and the decoded soundtrack of each video."""

import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg

from ..artefacts import data_version, encode_flac, png_markdown, waveform_png
from ..catalog import Catalog, VideoRecord
from ..files import file_sha256
from ..fingerprint.audio import DecodeError, decode
from ..resources import ArtefactStore, CatalogResource, SeasonFoldersResource, YouTubeResource
from ..youtube import is_youtube_episode, video_id_of
from .partitions import AUDIO_CODE_VERSION, PARAMS, RETRY, raw_audio_key, video_partitions
from .youtube import youtube_audio_file

source_media = dg.AssetSpec(
    "source_media",
    description="The video's media file in the media source, observed by media_scan_sensor.",
    partitions_def=video_partitions,
    group_name="videos",
    kinds={"file"},
)


def known_video(catalog: Catalog, episode_id: str) -> VideoRecord:
    """The catalog's record of a present video, or a Failure that says what to do."""
    video = catalog.video(episode_id)
    if video is None:
        raise dg.Failure(
            description=f"{episode_id}: not in the catalog; media_scan_sensor adds videos it finds",
            allow_retries=False,
        )
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
)
def raw_audio(
    context: dg.AssetExecutionContext,
    media: SeasonFoldersResource,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    youtube: YouTubeResource,
) -> dg.MaterializeResult:
    """The video's soundtrack, decoded once to mono 16-bit FLAC at the fingerprint sample rate."""
    cat = catalog.open()
    video = known_video(cat, context.partition_key)
    with tempfile.TemporaryDirectory(prefix="citywok-audio-") as work:
        if is_youtube_episode(video.episode_id):
            path, fetched = youtube_audio_file(context, youtube, artefacts, video, Path(work))
        else:
            path, fetched = media.locate(video.source), {}
        result = _decode_and_store(context, cat, artefacts, video, path, fetched)
    if fetched.get("downloaded"):
        # Only once the audio is stored: an interrupted run downloads again.
        youtube.archive.add(video_id_of(video.episode_id))
    return result


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
