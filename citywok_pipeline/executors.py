"""The executor, chosen by configuration (``CITYWOK_EXECUTOR``), not by a code change.

- ``multiprocess`` (default): every step in its own process on this machine; the ``gpu``
  pool (``dagster instance concurrency set gpu <number of GPUs>``) keeps GPU steps to the
  GPUs there are.
- ``in_process``: every step in the run's process (debugging).
- ``celery``: dagster-celery with a Redis broker (``CITYWOK_CELERY_BROKER_URL``, default
  ``redis://127.0.0.1:6379/0``; ``CITYWOK_CELERY_BACKEND_URL``, default the broker). Steps
  tagged ``dagster-celery/queue: gpu`` (``GPU_OP_TAGS``) go to workers started with ``-q
  gpu``, the rest to ``-q dagster``. Needs a shared instance (Postgres) and artefact store.
- ``k8s``: dagster-k8s's ``k8s_job_executor``: a pod per step, in ``CITYWOK_K8S_NAMESPACE``
  (default ``citywok``); GPU steps request ``nvidia.com/gpu`` and a GPU node through their
  ``dagster-k8s/config`` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


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
        }
        return celery_executor.configured(config, name="celery")
    if name in ("k8s", "kubernetes"):
        from dagster_k8s import k8s_job_executor

        k8s: dict[str, Any] = {
            "job_namespace": env.get("CITYWOK_K8S_NAMESPACE") or "citywok",
            "max_concurrent": int(env.get("CITYWOK_K8S_MAX_CONCURRENT") or 16),
            "env_config_maps": ["citywok-env"],
            "env_secrets": ["citywok-secrets"],
        }
        return k8s_job_executor.configured(k8s, name="k8s")
    raise ValueError(
        f"CITYWOK_EXECUTOR={env.get('CITYWOK_EXECUTOR')!r} is not one of {', '.join(EXECUTORS)}"
    )
