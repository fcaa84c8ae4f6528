"""The one Definitions object of the CityWok code location.

Loaded lazily (``@dg.definitions``): nothing is read from the environment when this module is
imported. When the code location loads, the environment picks the implementations:

- ``CITYWOK_BUCKET_URL=s3://bucket/prefix``: artefacts in that bucket under
  ``<prefix>/artefacts/`` (``CITYWOK_S3_ENDPOINT_URL`` for R2 or SeaweedFS, keys from
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``); ``file:///path``: under ``/path/artefacts``;
  unset: ``$CITYWOK_HOME/artefacts``.
- ``CITYWOK_MEDIA_ROOT``: the season folders (default ``$CITYWOK_HOME/media``).
- The catalog and the snapshot directory live under ``$CITYWOK_HOME``.

Values that come from variables are passed as ``dg.EnvVar``, so the UI shows where they come
from and secrets never land in run config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import dagster as dg
from dagster_aws.s3 import S3Resource

from .assets import ASSET_CHECKS, ASSETS, JOBS, PUBLISHING_SCHEDULES, transcript_segments
from .executors import executor_for
from .resources import (
    ArtefactStore,
    CatalogResource,
    LocalArtefactStore,
    S3ArtefactStore,
    SeasonFoldersResource,
    SnapshotDirectoryResource,
    TranscriberResource,
)
from .resources.embedder import EmbedderResource
from .resources.postgres import PostgresResource
from .resources.publishing import PublishedVersionsResource
from .resources.youtube import YouTubeResource, youtube_for
from .sensors import SCHEDULES, SENSORS


def _env(env: Mapping[str, str], name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env.get(name) else None


def artefact_store_for(env: Mapping[str, str]) -> ArtefactStore:
    """The artefact store the environment asks for (see the module docstring)."""
    bucket_url = env.get("CITYWOK_BUCKET_URL", "")
    scheme = urlparse(bucket_url).scheme
    if scheme == "s3":
        endpoint = _env(env, "CITYWOK_S3_ENDPOINT_URL")
        region = _env(env, "AWS_REGION") or ("auto" if endpoint else None)
        return S3ArtefactStore(
            bucket_url=dg.EnvVar("CITYWOK_BUCKET_URL"),
            s3=S3Resource(
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=_env(env, "AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=_env(env, "AWS_SECRET_ACCESS_KEY"),
            ),
        )
    if scheme == "file":
        return LocalArtefactStore(root=str(Path(unquote(urlparse(bucket_url).path)) / "artefacts"))
    if bucket_url:
        raise ValueError(
            f"CITYWOK_BUCKET_URL must be s3://bucket/prefix or file:///path, got {bucket_url!r}"
        )
    return LocalArtefactStore()


def transcriber_for(env: Mapping[str, str]) -> TranscriberResource:
    """The transcriber: ``CITYWOK_ASR_BACKEND`` (auto), ``CITYWOK_ASR_MODEL_PATH`` (the packaged
    tiny.en), ``CITYWOK_ASR_ALIGN_MODEL_PATH`` and ``CITYWOK_HF_TOKEN`` (whisperx), when set."""
    return TranscriberResource(
        backend=_env(env, "CITYWOK_ASR_BACKEND") or "auto",
        model_path=_env(env, "CITYWOK_ASR_MODEL_PATH"),
        align_model_path=_env(env, "CITYWOK_ASR_ALIGN_MODEL_PATH"),
        diarize_token=_env(env, "CITYWOK_HF_TOKEN"),
    )


def embedder_for(env: Mapping[str, str]) -> EmbedderResource:
    """The segment embedder: ``CITYWOK_EMBEDDING_MODEL_PATH`` (default the packaged
    all-MiniLM-L6-v2) and ``CITYWOK_EMBEDDING_QUANTIZATION`` (float16), when set."""
    return EmbedderResource(
        model_path=_env(env, "CITYWOK_EMBEDDING_MODEL_PATH"),
        quantization=_env(env, "CITYWOK_EMBEDDING_QUANTIZATION") or "float16",
    )


def versions_for(env: Mapping[str, str]) -> PublishedVersionsResource:
    """Where published versions go: the same CITYWOK_BUCKET_URL as the artefacts (versions sit
    beside ``artefacts/`` under its prefix); unset, ``$CITYWOK_HOME/published``."""
    bucket_url = env.get("CITYWOK_BUCKET_URL", "")
    if urlparse(bucket_url).scheme == "s3":
        endpoint = _env(env, "CITYWOK_S3_ENDPOINT_URL")
        return PublishedVersionsResource(
            bucket_url=dg.EnvVar("CITYWOK_BUCKET_URL"),
            endpoint_url=endpoint,
            region_name=_env(env, "AWS_REGION") or ("auto" if endpoint else None),
            aws_access_key_id=_env(env, "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env(env, "AWS_SECRET_ACCESS_KEY"),
        )
    return PublishedVersionsResource(bucket_url=bucket_url or None)


def resources_for(env: Mapping[str, str]) -> dict[str, Any]:
    """Every resource the assets, checks and sensors use, configured from ``env``."""
    return {
        "media": SeasonFoldersResource(root=_env(env, "CITYWOK_MEDIA_ROOT")),
        "catalog": CatalogResource(),
        "artefacts": artefact_store_for(env),
        "snapshots": SnapshotDirectoryResource(),
        "versions": versions_for(env),
        "transcriber": transcriber_for(env),
        "youtube": youtube_for(env),
        "embedder": embedder_for(env),
        # The transcript database, and with it the transcript_segments asset, only when set.
        **(
            {"database": PostgresResource(url=dg.EnvVar("CITYWOK_DATABASE_URL"))}
            if env.get("CITYWOK_DATABASE_URL")
            else {}
        ),
    }


def build_definitions(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The Definitions, with ``resources`` (default: configured from the environment).

    ``transcript_segments`` is included when the resources hold a ``database``.
    """
    resources = dict(resources) if resources is not None else resources_for(os.environ)
    resources.setdefault("youtube", YouTubeResource())  # no channels: its sensors skip
    return dg.Definitions(
        assets=[*ASSETS, transcript_segments] if "database" in resources else ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=JOBS,
        sensors=SENSORS,
        schedules=[*SCHEDULES, *PUBLISHING_SCHEDULES],
        resources=resources,
        # On Definitions, not on the jobs: job tags do not reach runs launched from the UI,
        # backfills or sensors. CITYWOK_EXECUTOR picks it (see citywok_pipeline.executors).
        executor=executor_for(os.environ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
