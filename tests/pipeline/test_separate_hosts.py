"""Every step on any machine: nothing passes between steps but the catalog database, the Dagster
instance and the bucket.

- ``test_the_pipeline_runs_on_hosts_that_share_no_disk``: the cluster of ``make scale-demo``
  (citywok_pipeline/demo/scale.py): Redis, Postgres (instance and catalog), SeaweedFS (artefacts
  and bucket), ``dagster-daemon`` and a ``gpu`` and a ``cpu`` Celery worker, each with its own
  ``CITYWOK_HOME``, working directory and temp dir. The sensors discover the library, the steps
  run on the workers, a version is published; a client pulls it into a third empty folder and
  matches a clip.
- ``test_every_step_works_from_an_empty_home`` (cheap): the real sensors and assets,
  in-process, each step (and each check, each sensor tick) run on its own with a fresh empty
  ``CITYWOK_HOME``, working directory and temp dir; any step that read a local file another
  step wrote would fail.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from citywok_pipeline.definitions import build_definitions
from citywok_pipeline.demo import scale
from citywok_pipeline.demo.degrade import cut
from citywok_pipeline.demo.library import encode
from citywok_pipeline.embedded import PassReport, apply_sensor_result, evaluate_sensor
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.resources import (
    ArtefactStore,
    CatalogResource,
    SeasonFoldersResource,
    SnapshotDirectoryResource,
    TranscriberResource,
)
from citywok_pipeline.resources.embedder import EmbedderResource
from citywok_pipeline.resources.publishing import PublishedVersionsResource
from tests.conftest import CITYWOK, S3Server, free_port

from .conftest import PG_HOST, PG_PORT, PG_USER, sqlite_instance

pytestmark = pytest.mark.slow


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


class FreshHomes:
    """Hands each step a new empty CITYWOK_HOME, working directory and temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: list[tuple[str, Path]] = []

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[Path]:
        place = self.root / f"{len(self.used):03d}-{label.replace('/', '_')}"
        home, work, tmp = place / "home", place / "work", place / "tmp"
        for d in (home, work, tmp):
            d.mkdir(parents=True)
        self.used.append((label, place))
        saved = {k: os.environ.get(k) for k in ("CITYWOK_HOME", "TMPDIR")}
        cwd, tempdir = Path.cwd(), tempfile.tempdir
        os.environ.update(CITYWOK_HOME=str(home), TMPDIR=str(tmp))
        tempfile.tempdir = str(tmp)
        os.chdir(work)
        try:
            yield home
        finally:
            os.chdir(cwd)
            tempfile.tempdir = tempdir
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def steps_of(defs: dg.Definitions, job_name: str) -> list[dg.JobDefinition]:
    """The job's assets in dependency order, each followed by its checks: a job for each step."""
    graph = defs.resolve_asset_graph()
    selected = defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
    steps: list[dg.UnresolvedAssetJobDefinition] = []
    for key in graph.toposorted_asset_keys:
        if key not in selected:
            continue
        partitions = graph.get(key).partitions_def
        selections = [dg.AssetSelection.assets(key).without_checks()] + [
            dg.AssetSelection.checks(check)
            for check in sorted(graph.asset_check_keys, key=str)
            if check.asset_key == key
        ]
        steps.extend(
            dg.define_asset_job(f"step_{len(steps)}", selection=s, partitions_def=partitions)
            for s in selections
        )
    with_steps = dg.Definitions.merge(defs, dg.Definitions(jobs=steps))
    return [with_steps.resolve_job_def(j.name) for j in steps]


def run_step_by_step(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    homes: FreshHomes,
    job_name: str,
    partition: str | None,
) -> None:
    for job in steps_of(defs, job_name):
        label = f"{job_name}:{partition}:{job.name}"
        with homes.step(label):
            # A checks-only job has no partitions of its own: the partition goes as a run tag.
            result = job.execute_in_process(
                instance=instance,
                tags={"dagster/partition": partition} if partition else None,
                raise_on_error=False,
            )
        failures = [e.message for e in result.all_events if e.is_step_failure]
        checks = [
            e.event_specific_data.description
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
        ]
        assert result.success and not checks, f"{label}: {failures or checks}"


def tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, homes: FreshHomes, sensor: str
) -> list[dg.RunRequest]:
    """One tick of a sensor in a fresh home: its partitions applied, its run requests returned."""
    with homes.step(sensor):
        result = evaluate_sensor(defs, instance, sensor)
        partitions_only = dg.SensorResult(
            dynamic_partitions_requests=result.dynamic_partitions_requests
        )
        apply_sensor_result(defs, instance, sensor, partitions_only, PassReport())
    return list(result.run_requests or [])


def clip_of(media: Path, source: str, start_s: float, out: Path) -> Path:
    samples = decode(media / source, sample_rate=8000)
    return encode(cut(samples, 8000, start_s=start_s, duration_s=5.0), out, sample_rate=8000)


def test_every_step_works_from_an_empty_home(
    media_root: Path, tmp_path: Path, postgres_database: str
) -> None:
    bucket = (tmp_path / "bucket").as_uri()
    resources: dict[str, Any] = {
        "media": SeasonFoldersResource(root=str(media_root)),
        "catalog": CatalogResource(url=pg_url(postgres_database)),
        "artefacts": ArtefactStore(bucket_url=bucket),
        "versions": PublishedVersionsResource(bucket_url=bucket),
        "transcriber": TranscriberResource(backend="faster-whisper", device="cpu"),
        "embedder": EmbedderResource(device="cpu"),
        # Each step's local copy of its shard lands in its own (fresh) home: a cache only.
        "snapshots": SnapshotDirectoryResource(),
    }
    defs = build_definitions(resources)
    homes = FreshHomes(tmp_path / "steps")
    with sqlite_instance(tmp_path / "dagster") as instance:
        for sensor in ("media_scan_sensor", "season_snapshot_sensor"):
            requests = tick(defs, instance, homes, sensor)
            assert requests, f"{sensor} requested nothing"
            job = defs.resolve_sensor_def(sensor).job_name
            for request in requests:
                run_step_by_step(defs, instance, homes, job, request.partition_key)
        assert tick(defs, instance, homes, "season_snapshot_sensor") == []
        run_step_by_step(defs, instance, homes, "publish_job", None)

    # 4 videos x 4 steps, 2 seasons x (shard + check), the publish, and the sensor ticks.
    assert len(homes.used) >= 4 * 4 + 2 * 2 + 1 + 3
    pulled = tmp_path / "pulled"
    pull = subprocess.run(
        [CITYWOK, "pull", bucket, "--to", str(pulled)], capture_output=True, text=True, check=False
    )
    assert pull.returncode == 0, pull.stderr
    source = "The Night Kitchen/Season 01/The Night Kitchen - S01E02.flac"
    clip = clip_of(media_root, source, 6.0, tmp_path / "clip.wav")
    match = subprocess.run(
        [CITYWOK, "match", str(pulled), str(clip), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert match.returncode == 0, match.stderr
    best = json.loads(match.stdout)["matches"][0]
    assert best["episode_id"] == "the-night-kitchen-s01e02"
    assert abs(best["offset_s"] - 6.0) < 0.5


def test_a_step_whose_catalog_is_unreachable_fails_naming_it_and_is_retried(
    tmp_path: Path,
) -> None:
    from citywok_pipeline.assets import season_snapshot

    url = f"postgresql://citywok:s3cret-pw@127.0.0.1:{free_port()}/catalog"  # nothing there
    with sqlite_instance(tmp_path / "dagster") as instance:
        instance.add_dynamic_partitions("seasons", ["showa-s01"])
        result = dg.materialize(
            [season_snapshot], partition_key="showa-s01", instance=instance, raise_on_error=False,
            resources={
                "catalog": CatalogResource(url=url),
                "artefacts": ArtefactStore(bucket_url=(tmp_path / "bucket").as_uri()),
                "snapshots": SnapshotDirectoryResource(path=str(tmp_path / "snapshot")),
            },
        )  # fmt: skip
    assert not result.success
    restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert len(restarts) == 2  # the step's retry policy
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()  # with its cause
    assert f"catalog database postgresql://citywok@127.0.0.1:{url.split(':')[3]}" in message
    assert "s3cret" not in message and "nothing was written" in message
    assert not (tmp_path / "bucket").exists()


def _proc_paths(pid: int) -> dict[str, str]:
    """What a running process really has: its working directory and path variables (once it
    has exec'd: until then a child shows its parent's environment)."""
    deadline = time.monotonic() + 30
    while True:
        environ = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
            if "=" in item
        )
        if "CITYWOK_HOME" in environ or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return {
        "cwd": os.readlink(f"/proc/{pid}/cwd"),
        **{k: environ[k] for k in ("CITYWOK_HOME", "TMPDIR", "DAGSTER_HOME")},
    }


def _disjoint(paths: dict[str, str]) -> list[str]:
    """Pairs of paths where one is the other or lies inside it."""
    items = sorted(paths.items())
    return [
        f"{a} ({pa}) and {b} ({pb})"
        for i, (a, pa) in enumerate(items)
        for b, pb in items[i + 1 :]
        if Path(pa) == Path(pb) or Path(pa) in Path(pb).parents or Path(pb) in Path(pa).parents
    ]


@pytest.mark.timeout(900)
def test_the_pipeline_runs_on_hosts_that_share_no_disk(
    media_root: Path,
    tmp_path: Path,
    postgres_database: str,
    redis_broker: str,
    seaweedfs: S3Server,
    s3_bucket: str,
) -> None:
    services = scale.Services(
        broker_url=redis_broker, pg_url=pg_url(postgres_database),
        s3_endpoint=seaweedfs.endpoint_url, s3_key=seaweedfs.access_key,
        s3_secret=seaweedfs.secret_key, bucket_url=f"s3://{s3_bucket}/citywok",
    )  # fmt: skip
    with scale.start_cluster(tmp_path / "hosts", services, media_root) as cluster:
        # No path is shared: each process's own cwd, home, temp dir and Dagster home, as the
        # kernel sees them, lie apart from every other host's.
        seen = {}
        for name in ("daemon", "gpu", "cpu"):
            for what, path in _proc_paths(cluster.procs[name].pid).items():
                seen[f"{name} {what}"] = path
        for what, path in zip(("cwd", "CITYWOK_HOME", "TMPDIR", "DAGSTER_HOME"),
                              cluster.hosts["client"].paths, strict=True):  # fmt: skip
            seen[f"client {what}"] = str(path)
        assert _disjoint(seen) == []
        assert seen["gpu CITYWOK_HOME"] != seen["cpu CITYWOK_HOME"]

        scale.wait_until(cluster, lambda: scale.settled(cluster), 600, "the shards were not built")
        scale.publish(cluster)
        steps = scale.steps_run(cluster)
        failed = scale.failed_runs(cluster)
        pulled = cluster.hosts["client"].home / "pulled"
        version = scale.citywok(cluster, "pull", services.bucket_url, "--to", str(pulled))
        source = "The Night Kitchen/Season 01/The Night Kitchen - S01E02.flac"
        clip = clip_of(media_root, source, 6.0, cluster.hosts["client"].work / "clip.wav")
        answer = json.loads(scale.citywok(cluster, "match", str(pulled), str(clip), "--json"))

    # Every step ran on a worker, the GPU steps on the gpu worker (one at a time), the rest on
    # the cpu worker; the daemon's run workers ran none.
    assert steps and all(s.ok for s in steps), [s for s in steps if not s.ok]
    assert not failed, failed
    for s in steps:
        wanted = "gpu" if s.step in scale.GPU_STEPS else "cpu"
        assert s.worker == cluster.worker_names[wanted], s
    assert {s.step for s in steps} >= {
        "raw_audio", "fingerprints", "transcript", "segment_embeddings", "season_snapshot",
        "published_version",
    }, sorted({s.step for s in steps})  # fmt: skip
    # The blocking check of each stored shard ran (on the cpu worker, as its step) and passed.
    checks = scale.check_results(cluster)
    assert checks and all(checks.values()), checks
    gpu = sorted((s.start, s.end, s.step) for s in steps if s.step in scale.GPU_STEPS)
    assert len(gpu) == 8
    for (_, end, a), (start, _, b) in itertools.pairwise(gpu):
        assert start >= end, f"{a} and {b} overlapped on the gpu worker"
    # The client's third, empty folder answers with the right episode and second.
    assert version.split()[-1].startswith("v")
    best = answer["matches"][0]
    assert best["episode_id"] == "the-night-kitchen-s01e02"
    assert abs(best["offset_s"] - 6.0) < 0.5
