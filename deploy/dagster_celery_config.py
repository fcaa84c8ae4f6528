"""Celery settings for the workers (dagster_celery.app imports this module when on the path)."""

import os

broker_url = os.environ.get("CITYWOK_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = os.environ.get("CITYWOK_CELERY_BACKEND_URL", broker_url)
# One task at a time per GPU worker: do not reserve a second step while one runs.
worker_prefetch_multiplier = 1
task_acks_late = True
