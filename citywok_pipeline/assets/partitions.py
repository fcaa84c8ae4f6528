"""Partitions, artefact keys and code versions shared by the assets, sensors and jobs."""

from __future__ import annotations

import dagster as dg

from ..artefacts import params_version
from ..fingerprint.params import DEFAULT_PARAMS, FingerprintParams

# One dynamic partition per video (``showa-s01e03``) and per season (``showa-s01``), added by
# media_scan_sensor. There is no dynamic-to-dynamic mapping between them: which videos make a
# season is data, kept in the catalog.
video_partitions = dg.DynamicPartitionsDefinition(name="videos")
season_partitions = dg.DynamicPartitionsDefinition(name="seasons")

PARAMS: FingerprintParams = DEFAULT_PARAMS

# Code versions follow the params, so a parameter change marks the assets stale: raw audio
# depends only on the sample rate (and its own format), the rest on every parameter.
AUDIO_CODE_VERSION = f"flac16-{PARAMS.sample_rate}hz-1"
FINGERPRINTS_CODE_VERSION = f"fp{PARAMS.version}-{params_version(PARAMS)}-1"
# 2: shards hold the season's transcript segments and their vectors; 3: and their ANN graph
# and BM25 weights (segment format 2).
SNAPSHOT_CODE_VERSION = f"shard-{params_version(PARAMS)}-3"

RETRY = dg.RetryPolicy(max_retries=2, delay=2.0, backoff=dg.Backoff.EXPONENTIAL)

# A run being cancelled. Dagster turns the interrupt a cancel sends into a retry of a step
# with a retry policy ("respect retry policy when interrupts occur"), and the retried step
# would run the cancelled run on to success: every step with ``RETRY`` calls
# :func:`stop_if_cancelled` first.
_CANCELLED = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


def stop_if_cancelled(context: dg.AssetExecutionContext) -> None:
    """Fail the step, without retries, when its run is being cancelled (the run then ends
    CANCELED: Dagster reports a run that fails while CANCELING as cancelled)."""
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is not None and run.status in _CANCELLED:
        raise dg.Failure(
            description=f"the run was cancelled: {context.op_def.name} not started again",
            allow_retries=False,
        )


# Transcripts follow the transcriber's output format; a model change shows in the metadata.
TRANSCRIPT_CODE_VERSION = "transcript-1"
# Segment embeddings follow their artefact format; the model shows in the metadata.
EMBEDDINGS_CODE_VERSION = "segment-embeddings-1"

# The GPU steps (transcript, segment_embeddings): the pool `gpu` (its limit is the number of
# GPUs; the embedded dagster.yaml runs every unconfigured pool one step at a time), the Celery
# queue `gpu` (workers started with `-q gpu`) and, with the Kubernetes executor, one
# `nvidia.com/gpu` per step's pod. With no GPU present they run on the CPU.
GPU_POOL = "gpu"
GPU_OP_TAGS: dict[str, object] = {
    "dagster-celery/queue": "gpu",
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "limits": {"nvidia.com/gpu": "1"},
                "requests": {"nvidia.com/gpu": "1"},
            }
        },
        # GPU nodes as NVIDIA's GPU feature discovery labels them; the GPU taint tolerated.
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    },
}


def raw_audio_key(episode_id: str) -> str:
    return f"raw_audio/{episode_id}.flac"


def fingerprints_key(episode_id: str) -> str:
    return f"fingerprints/{episode_id}.cwfp.zst"


def transcript_key(episode_id: str) -> str:
    """The zstd-compressed ``Transcript.to_json`` of a video."""
    return f"transcripts/{episode_id}.json.zst"


def segment_embeddings_key(episode_id: str) -> str:
    """The packed :class:`~citywok_pipeline.transcripts.embeddings.SegmentEmbeddings` of a video."""
    return f"segment_embeddings/{episode_id}.cwse.zst"


SHARDS_PREFIX = "shards/"


def shard_key(season: str) -> str:
    return f"{SHARDS_PREFIX}{season}.lmdb"
