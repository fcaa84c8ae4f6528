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
SNAPSHOT_CODE_VERSION = f"shard-{params_version(PARAMS)}-1"

RETRY = dg.RetryPolicy(max_retries=2, delay=2.0, backoff=dg.Backoff.EXPONENTIAL)


def raw_audio_key(episode_id: str) -> str:
    return f"raw_audio/{episode_id}.flac"


def fingerprints_key(episode_id: str) -> str:
    return f"fingerprints/{episode_id}.cwfp.zst"


def shard_key(season: str) -> str:
    return f"shards/{season}.lmdb"
