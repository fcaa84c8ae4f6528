#!/bin/sh
# Celery worker command lines (CITYWOK_EXECUTOR=celery). Every worker needs the same
# DAGSTER_HOME (deploy/dagster-postgres.yaml), CITYWOK_* variables and artefact store as the
# daemon, and a dagster_celery_config module or these env vars for the broker:
#   CITYWOK_CELERY_BROKER_URL=redis://redis:6379/0
# GPU: one worker per GPU, one step at a time, in the worker's own process (solo pool), so the
# transcriber and embedder models stay loaded between steps.
#   CUDA_VISIBLE_DEVICES=0 celery -A dagster_celery.app worker -Q gpu -n gpu0@%h --pool solo -c 1
# CPU: the default queue, as many processes as cores.
#   celery -A dagster_celery.app worker -Q dagster -n cpu@%h -c "$(nproc)"
set -eu
queue="${1:-dagster}"
if [ "$queue" = "gpu" ]; then
    exec celery -A dagster_celery.app worker -Q gpu -n "gpu${CUDA_VISIBLE_DEVICES:-0}@%h" --pool solo -c 1 --loglevel INFO
fi
exec celery -A dagster_celery.app worker -Q dagster -n "cpu@%h" -c "$(nproc)" --loglevel INFO
