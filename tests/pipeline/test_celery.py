"""Scale-out on Celery: the per-video assets of two runs at once, GPU steps on the `gpu` worker.

Real parts: the local Redis as the broker, Postgres instance storage (deploy/dagster-postgres.yaml
on the local server), two `celery -A dagster_celery.app worker` processes (queue `gpu`, one step
at a time in its own process as on a GPU machine; queue `dagster` for the rest) and `dagster
asset materialize` runs. There is no GPU here: the `gpu` queue is served on the CPU.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.definitions import build_definitions
from citywok_pipeline.embedded import evaluate_sensor

from .conftest import PG_HOST, PG_PORT, PG_USER, REPO, stop_process_group

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GPU_STEPS = {"transcript", "segment_embeddings"}
CPU_STEPS = {"raw_audio", "fingerprints"}
BROKER = "redis://127.0.0.1:6379/9"


@pytest.fixture
def celery_env(
    media_root: Path, postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The environment of the workers and the runs: one CITYWOK_HOME, a Postgres instance."""
    import redis

    try:
        redis.Redis.from_url(BROKER).flushdb()  # no task left over from an earlier run
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"the Celery test needs Redis on 127.0.0.1:6379: {exc}")
    dagster_home = tmp_path / "dagster-pg"
    dagster_home.mkdir()
    shutil.copyfile(REPO / "deploy" / "dagster-postgres.yaml", dagster_home / "dagster.yaml")
    env = {
        "CITYWOK_HOME": str(tmp_path / "citywok"),
        "CITYWOK_MEDIA_ROOT": str(media_root),
        "CITYWOK_EXECUTOR": "celery",
        "CITYWOK_CELERY_BROKER_URL": BROKER,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_DB": postgres_database,
        "DAGSTER_PG_USERNAME": PG_USER,
        "DAGSTER_PG_PASSWORD": "",
        # deploy/dagster_celery_config.py: the workers' broker and one task at a time.
        "PYTHONPATH": str(REPO / "deploy"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **env}


@pytest.fixture
def workers(celery_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A `gpu` worker (solo pool, concurrency 1) and a `dagster` worker; their names."""
    tag = uuid.uuid4().hex[:6]
    names = {"gpu": f"gpu-{tag}", "dagster": f"cpu-{tag}"}
    procs = []
    for queue, extra in (("gpu", ["--pool", "solo", "-c", "1"]), ("dagster", ["-c", "2"])):
        log = open(tmp_path / f"worker-{queue}.log", "wb")  # noqa: SIM115 (closed below)
        procs.append(
            (
                subprocess.Popen(
                    [str(BIN / "celery"), "-A", "dagster_celery.app", "worker", "-Q", queue,
                     "-n", f"{names[queue]}@%h", *extra, "--loglevel", "INFO"],
                    env=celery_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ),
                log,
            )
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all(
            f"{names[q]}@" in (tmp_path / f"worker-{q}.log").read_text() and "ready" in
            (tmp_path / f"worker-{q}.log").read_text()
            for q in names
        ):  # fmt: skip
            assert time.monotonic() < deadline, "the Celery workers did not start in 60 s"
            assert all(p.poll() is None for p, _ in procs), "a Celery worker exited"
            time.sleep(0.5)
        yield names
    finally:
        for proc, log in procs:
            stop_process_group(proc)
            log.close()


def step_records(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, object]]:
    """Per step: the Celery worker that took it, and when it started and finished."""
    steps: dict[str, dict[str, object]] = {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        if ev is None or ev.step_key is None:
            continue
        step = steps.setdefault(ev.step_key, {})
        if ev.event_type_value == "ENGINE_EVENT":
            metadata = getattr(ev.event_specific_data, "metadata", None) or {}
            if "Celery worker" in metadata:
                step["worker"] = metadata["Celery worker"].value
        elif ev.event_type_value == "STEP_START":
            step["start"] = rec.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            step["end"] = rec.timestamp
            step["ok"] = ev.event_type_value == "STEP_SUCCESS"
    return steps


def test_gpu_steps_run_on_the_gpu_worker_one_at_a_time(
    celery_env: dict[str, str], workers: dict[str, str], tmp_path: Path
) -> None:
    with dg.DagsterInstance.get() as instance:
        # The media scan adds the video partitions and their catalog rows; the runs are ours.
        scan = evaluate_sensor(build_definitions(), instance, "media_scan_sensor")
        for request in scan.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys or [])
            )
        videos = sorted(r.partition_key for r in scan.run_requests or [])[:2]
        assert len(videos) == 2
        # Two runs at once: their GPU steps compete for the one GPU worker. The second starts
        # once the first is recorded (two processes storing the same new job snapshot at the
        # same moment can collide on its key in the instance).
        runs = []
        for video in videos:
            runs.append(
                subprocess.Popen(
                    [str(BIN / "dagster"), "asset", "materialize", "-m",
                     "citywok_pipeline.definitions", "--select",
                     ",".join(sorted(CPU_STEPS | GPU_STEPS)), "--partition", video],
                    env=celery_env, stdout=open(tmp_path / f"run-{video}.log", "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            deadline = time.monotonic() + 120
            while len(instance.get_run_records()) < len(runs):
                assert time.monotonic() < deadline, "the first run was not recorded in 120 s"
                time.sleep(0.2)
        for proc, video in zip(runs, videos, strict=True):
            assert proc.wait(timeout=300) == 0, (tmp_path / f"run-{video}.log").read_text()[-3000:]

        records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
        assert len(records) == 2
        gpu_spans = []
        for record in records:
            steps = step_records(instance, record.dagster_run.run_id)
            assert set(steps) == CPU_STEPS | GPU_STEPS
            for key, step in steps.items():
                assert step.get("ok"), f"{key} did not succeed: {step}"
                queue = "gpu" if key in GPU_STEPS else "dagster"
                assert str(step["worker"]).startswith(f"{workers[queue]}@"), (key, step)
                if key in GPU_STEPS:
                    gpu_spans.append((float(step["start"]), float(step["end"]), key))  # type: ignore[arg-type]
    # The one GPU worker never ran two steps at once, across both runs.
    gpu_spans.sort()
    assert len(gpu_spans) == 4
    for (_, end, a), (start, _, b) in itertools.pairwise(gpu_spans):
        assert start >= end, f"{a} and {b} overlapped on the GPU worker"
