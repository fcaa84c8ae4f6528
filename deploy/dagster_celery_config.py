"""Celery settings for the workers (dagster_celery.app imports this module when on the path)."""

import os

from citywok_pipeline.executors import DEFAULT_BROKER, celery_settings

broker_url = os.environ.get("CITYWOK_CELERY_BROKER_URL", DEFAULT_BROKER)
result_backend = os.environ.get("CITYWOK_CELERY_BACKEND_URL", broker_url)
# The same as the run workers': visibility timeout above the longest step, one step at a time
# per worker process, acknowledged when it ends.
_settings = celery_settings(os.environ)
broker_transport_options = _settings["broker_transport_options"]
result_backend_transport_options = _settings["result_backend_transport_options"]
worker_prefetch_multiplier = _settings["worker_prefetch_multiplier"]
task_acks_late = _settings["task_acks_late"]
