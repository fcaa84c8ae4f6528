"""The executor, chosen by configuration (``CITYWOK_EXECUTOR``), not by a code change.

- ``multiprocess`` (default): every step in its own process on this machine; the ``gpu``
  pool (``dagster instance concurrency set gpu <number of GPUs>``) keeps GPU steps to the
  GPUs there are.
- ``in_process``: every step in the run's process (debugging).
- ``celery``: dagster-celery with a Redis broker (``CITYWOK_CELERY_BROKER_URL``, default
  ``redis://127.0.0.1:6379/0``; ``CITYWOK_CELERY_BACKEND_URL``, default the broker). Steps
  tagged ``dagster-celery/queue: gpu`` (``GPU_OP_TAGS``) go to workers started with ``-q
  gpu``, the rest to ``-q dagster``. Needs a shared instance (Postgres), catalog
  (``CITYWOK_CATALOG_URL``) and bucket (``CITYWOK_BUCKET_URL``); :func:`celery_settings` sets
  the visibility timeout above the longest step.
- ``k8s``: dagster-k8s's ``k8s_job_executor``: a pod per step, in ``CITYWOK_K8S_NAMESPACE``
  (default ``citywok``), from ``CITYWOK_K8S_JOB_IMAGE`` (default: the user code deployment's
  image); GPU steps request ``nvidia.com/gpu`` and a GPU node through their
  ``dagster-k8s/config`` tag and run ``CITYWOK_K8S_GPU_IMAGE`` when it is set. Runs start
  through the ``K8sRunLauncher`` of Dagster's Helm chart (deploy/k8s/values.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
# Redis hands a task not acknowledged within this many seconds to another worker; with
# task_acks_late a step is acknowledged when it ends, so this must exceed the longest step (a
# long transcription on a slow GPU) or that step runs twice. CITYWOK_CELERY_VISIBILITY_TIMEOUT_S
# overrides it.
VISIBILITY_TIMEOUT_S = 12 * 3600
# The steps that carry GPU_OP_TAGS (the gpu pool, the Celery queue gpu, a GPU node).
GPU_STEP_KEYS = ("transcript", "segment_embeddings")


def celery_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Celery settings the run workers (as the executor's ``config_source``) and the Celery
    workers (deploy/dagster_celery_config.py) share."""
    timeout = int(env.get("CITYWOK_CELERY_VISIBILITY_TIMEOUT_S") or VISIBILITY_TIMEOUT_S)
    return {
        "broker_transport_options": {"visibility_timeout": timeout},
        "result_backend_transport_options": {"visibility_timeout": timeout},
        # One step at a time per worker process: a GPU worker reserves no second step.
        "worker_prefetch_multiplier": 1,
        # A step whose worker dies is delivered again (after the visibility timeout).
        "task_acks_late": True,
    }


def executor_for(env: Mapping[str, str]) -> dg.ExecutorDefinition:
    """The executor ``CITYWOK_EXECUTOR`` names; ``ValueError`` naming it if unknown."""
    name = (env.get("CITYWOK_EXECUTOR") or "multiprocess").strip().lower().replace("-", "_")
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor

        broker = env.get("CITYWOK_CELERY_BROKER_URL") or DEFAULT_BROKER
        config: dict[str, Any] = {
            "broker": broker,
            "backend": env.get("CITYWOK_CELERY_BACKEND_URL") or broker,
            "include": ["citywok_pipeline.definitions"],
            "config_source": celery_settings(env),
        }
        return celery_executor.configured(config, name="celery")
    if name in ("k8s", "kubernetes"):
        from dagster_k8s import k8s_job_executor

        k8s: dict[str, Any] = {
            "job_namespace": env.get("CITYWOK_K8S_NAMESPACE") or "citywok",
            "max_concurrent": int(env.get("CITYWOK_K8S_MAX_CONCURRENT") or 16),
            # The CITYWOK_* settings (deploy/k8s/citywok-env.yaml) in every step's pod.
            "env_config_maps": ["citywok-env"],
            "env_secrets": ["citywok-secrets"],
        }
        if env.get("CITYWOK_K8S_JOB_IMAGE"):  # else the image of the user code deployment
            k8s["job_image"] = env["CITYWOK_K8S_JOB_IMAGE"]
        if env.get("CITYWOK_K8S_GPU_IMAGE"):  # the GPU steps' pods run the gpu image target
            k8s["per_step_k8s_config"] = {
                step: {"container_config": {"image": env["CITYWOK_K8S_GPU_IMAGE"]}}
                for step in GPU_STEP_KEYS
            }
        return k8s_job_executor.configured(k8s, name="k8s")
    raise ValueError(
        f"CITYWOK_EXECUTOR={env.get('CITYWOK_EXECUTOR')!r} is not one of {', '.join(EXECUTORS)}"
    )
