"""The one Definitions object of the CityWok code location.

Loaded lazily (``@dg.definitions``): nothing is read from the environment when this module is
imported. When the code location loads, the environment picks the implementations:

- ``CITYWOK_BUCKET_URL=s3://bucket/prefix``: artefacts in that bucket under
  ``<prefix>/artefacts/`` and the published versions beside them (``CITYWOK_S3_ENDPOINT_URL``
  for R2 or SeaweedFS, ``AWS_REGION``, keys from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``);
  ``file:///path``: the same under ``/path``; unset: ``$CITYWOK_HOME/artefacts`` and
  ``$CITYWOK_HOME/published``. Both open the URL with ``blobstore.open_store``.
- ``CITYWOK_MEDIA_ROOT``: the season folders (default ``$CITYWOK_HOME/media``).
- ``CITYWOK_CATALOG_URL=postgresql://...``: the catalog in that database (schema
  ``citywok_catalog``); unset: ``$CITYWOK_HOME/catalog.sqlite``.
- Without an S3 bucket, ``$CITYWOK_HOME/snapshot`` holds a copy of every season shard, for
  ``citywok match``.

Values that come from variables are passed as ``dg.EnvVar``, so the UI shows where they come
from and secrets never land in run config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from .assets import (
    ASSET_CHECKS,
    ASSETS,
    JOBS,
    PUBLISHING_SCHEDULES,
    VIDEO_ASSETS,
    transcript_segments,
)
from .automation import AlertWebhookResource, automate, automation_settings
from .blobstore import BlobStoreError, S3BlobStore, S3Settings, open_store
from .executors import executor_for
from .resources import (
    ArtefactStore,
    CatalogResource,
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


def _bucket_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The bucket URL and S3 settings both stores share, as ``dg.EnvVar``s (see the module
    docstring). The URL is opened here once, so a bad one fails the code location's load."""
    bucket_url = env.get("CITYWOK_BUCKET_URL", "")
    if not bucket_url:
        return {}
    try:
        store = open_store(bucket_url, S3Settings())
    except BlobStoreError as exc:
        raise ValueError(f"CITYWOK_BUCKET_URL: {exc}") from None
    if not isinstance(store, S3BlobStore):
        return {"bucket_url": dg.EnvVar("CITYWOK_BUCKET_URL")}
    return {
        "bucket_url": dg.EnvVar("CITYWOK_BUCKET_URL"),
        "s3": S3Resource(
            endpoint_url=_env(env, "CITYWOK_S3_ENDPOINT_URL"),
            region_name=_env(env, "AWS_REGION"),
            aws_access_key_id=_env(env, "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env(env, "AWS_SECRET_ACCESS_KEY"),
        ),
    }


def artefact_store_for(env: Mapping[str, str]) -> ArtefactStore:
    """The artefact store the environment asks for (see the module docstring)."""
    return ArtefactStore(**_bucket_settings(env))


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
    return PublishedVersionsResource(**_bucket_settings(env))


def resources_for(env: Mapping[str, str]) -> dict[str, Any]:
    """Every resource the assets, checks and sensors use, configured from ``env``."""
    return {
        "media": SeasonFoldersResource(root=_env(env, "CITYWOK_MEDIA_ROOT")),
        # Postgres when CITYWOK_CATALOG_URL names a database (steps on several machines), else
        # the SQLite file under CITYWOK_HOME.
        "catalog": CatalogResource(url=_env(env, "CITYWOK_CATALOG_URL")),
        "artefacts": artefact_store_for(env),
        # The local copy of every shard is for the embedded default; with an S3 bucket, pull.
        "snapshots": SnapshotDirectoryResource(enabled="s3" not in _bucket_settings(env)),
        "versions": versions_for(env),
        "transcriber": transcriber_for(env),
        "youtube": youtube_for(env),
        "alerts": AlertWebhookResource(url=_env(env, "CITYWOK_ALERT_WEBHOOK")),
        "embedder": embedder_for(env),
        # The transcript database, and with it the transcript_segments asset, only when set.
        **(
            {"database": PostgresResource(url=dg.EnvVar("CITYWOK_DATABASE_URL"))}
            if env.get("CITYWOK_DATABASE_URL")
            else {}
        ),
    }


PUBLISHED_KEY = dg.AssetKey("published_version")


def storage_kind(env: Mapping[str, str]) -> str:
    """The storage the UI shows on published_version: ``s3`` for an S3 or R2 bucket
    (``CITYWOK_BUCKET_URL=s3://...``), else ``folder`` (the local default)."""
    return "s3" if env.get("CITYWOK_BUCKET_URL", "").startswith("s3://") else "folder"


def build_definitions(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The Definitions, with ``resources`` (default: configured from the environment).

    ``transcript_segments`` is included when the resources hold a ``database``.
    """
    resources = dict(resources) if resources is not None else resources_for(os.environ)
    resources.setdefault("youtube", YouTubeResource())  # no channels: its sensors skip
    resources.setdefault("alerts", AlertWebhookResource())  # no webhook: failures only logged
    automation = automate(
        [*ASSETS, transcript_segments] if "database" in resources else ASSETS,
        video_assets=VIDEO_ASSETS,
        catalog=resources["catalog"],
        settings=automation_settings(os.environ),
    )
    kind = storage_kind(os.environ)
    assets = [
        a.map_asset_specs(lambda spec: spec.replace_attributes(kinds={kind}))
        if isinstance(a, dg.AssetsDefinition) and a.key == PUBLISHED_KEY
        else a
        for a in automation.assets
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[*ASSET_CHECKS, *automation.asset_checks],
        jobs=JOBS,
        sensors=[*SENSORS, *automation.sensors],
        schedules=[*SCHEDULES, *PUBLISHING_SCHEDULES],
        resources=resources,
        # On Definitions, not on the jobs: job tags do not reach runs launched from the UI,
        # backfills or sensors. CITYWOK_EXECUTOR picks it (see citywok_pipeline.executors).
        executor=executor_for(os.environ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
