"""kill -9 at random points of `citywok index`, `publish`, `pull` and `prune`, and of a Dagster
run: afterwards the snapshot verifies, `latest.json` names a complete manifest, `current` is a
complete version, nothing of the killed command is left running, and a re-run completes and
removes what the killed one left (shard temp files, pull staging folders, bucket temp files,
manifests that never became latest).

Each trial kills at a point drawn from a fixed seed: half at a time drawn over the command's
measured duration, half a moment after something it writes appears (a shard's temp file, a
staging folder, a manifest), so that the short windows where it is writing are hit too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from citywok_pipeline.blobstore import BlobStore, LocalBlobStore, S3BlobStore, S3Settings
from citywok_pipeline.publishing import (
    list_versions,
    prune_versions,
    publish_snapshot,
    pull_version,
    read_latest,
    read_manifest,
)
from citywok_pipeline.snapshot import Snapshot, verify_snapshot
from tests.conftest import S3Server

from .conftest import (
    CITYWOK,
    LONG,
    FaultFigures,
    Killed,
    Library,
    build_media,
    citywok,
    run_killed,
    session_pids,
    tree_digest,
    trials,
)

pytestmark = pytest.mark.slow

TRIALS = trials(ci=3, long=20)


@dataclass(frozen=True)
class Point:
    """When a trial kills: ``after_s`` from the start, or ``after_s`` after ``event`` holds."""

    after_s: float
    event: str | None = None

    def __str__(self) -> str:
        return f"{self.after_s:.3f} s" + (f" after {self.event}" if self.event else "")


def kill_points(seed: int, duration_s: float, events: list[str]) -> list[Point]:
    """``TRIALS`` points: even trials a few milliseconds after one of ``events`` (in turn),
    odd ones at a time over the measured duration."""
    rng = random.Random(seed)
    points = []
    for i in range(TRIALS):
        if i % 2 == 0 and events:
            points.append(Point(rng.uniform(0.0, 0.005), events[(i // 2) % len(events)]))
        else:
            points.append(Point(rng.uniform(0.15, 1.0) * duration_s))
    return points


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def kill(args: list[str | os.PathLike[str]], point: Point, events: dict[str, Callable[[int], bool]],
         env: dict[str, str] | None = None) -> Killed:  # fmt: skip
    when = events[point.event] if point.event else None
    return run_killed([CITYWOK, *args], after_s=point.after_s, when=when, env=env)


def hidden_temps(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp")) if root.exists() else []


def ok(result: object) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"  # type: ignore[attr-defined]


def restore(pristine: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(pristine, target, symlinks=True)


# ----------------------------------------------------------------------------------------------
# Snapshots and buckets to work on


@dataclass(frozen=True)
class Snapshots:
    """``a``: the library's snapshot (two seasons); ``b``: a changed library's (season 2
    re-encoded, a season 3), built by an index that was not killed."""

    a: Path
    b: Path


@pytest.fixture(scope="module")
def snapshots(library: Library, tmp_path_factory: pytest.TempPathFactory) -> Snapshots:
    work = tmp_path_factory.mktemp("kills-snapshots")
    build_media(work / "media", seasons=3, seed=1)
    result = citywok("index", work / "media", "--snapshot", work / "b", "--fingerprints-only", "-q")
    assert result.returncode == 0, ok(result)
    return Snapshots(library.snapshot, work / "b")


def shard_contents(snapshot: Path) -> dict[str, list[tuple[str, str]]]:
    """season -> [(episode id, sha256 of its file)]: what a snapshot holds."""
    with Snapshot.open(snapshot) as snap:
        return {s.season: [(e.episode_id, e.sha256) for e in s.episodes] for s in snap.shards}


def complete_latest(bucket: BlobStore) -> str:
    """Asserts that latest.json names a manifest whose every blob is there, whole; its version."""
    latest = read_latest(bucket)
    assert latest is not None, f"{bucket.url}: no latest.json"
    manifest = read_manifest(bucket, latest.version, sha256=latest.manifest_sha256)
    for shard in manifest.shards:
        data = bucket.get(shard.key)
        assert len(data) == shard.size and hashlib.sha256(data).hexdigest() == shard.sha256, (
            f"{bucket.uri(shard.key)} of the latest version {latest.version} is not whole"
        )
    return latest.version


def every_manifest_complete(bucket: BlobStore) -> None:
    present = {o.key for o in bucket.list("blobs/")}
    for v in list_versions(bucket):
        missing = [s.file for s in read_manifest(bucket, v).shards if s.key not in present]
        assert not missing, f"{v} lists shards the bucket lost: {missing}"


def content_of(bucket: BlobStore, version: str) -> str:
    return read_manifest(bucket, version).content_id()


# ----------------------------------------------------------------------------------------------
# citywok index


def test_a_killed_index_leaves_a_snapshot_that_verifies_and_a_rerun_completes_it(
    library: Library, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    media, snapshot = tmp_path / "media", tmp_path / "snapshot"
    pristine_media, pristine_snapshot = tmp_path / "pristine-media", tmp_path / "pristine-snapshot"
    shutil.copytree(library.media, media)
    result = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q")
    assert result.returncode == 0, ok(result)
    shutil.copytree(media, pristine_media)
    shutil.copytree(snapshot, pristine_snapshot)
    old = tree_digest(pristine_snapshot)
    # The change each trial indexes: season 2's episodes re-encoded, and a season 3.
    changed = tmp_path / "changed"
    build_media(changed, seasons=3, seed=7)

    def change() -> None:
        restore(pristine_media, media)
        restore(pristine_snapshot, snapshot)
        shutil.rmtree(media / "Show" / "Season 02")
        for season in ("Season 02", "Season 03"):
            shutil.copytree(changed / "Show" / season, media / "Show" / season)

    args: list[str | os.PathLike[str]] = ["index", media, "--snapshot", snapshot,
                                          "--fingerprints-only", "-q", "--jobs", "2"]  # fmt: skip
    change()
    duration = timed(lambda: citywok(*args))
    expected = shard_contents(snapshot)
    assert sorted(expected) == ["show-s01", "show-s02", "show-s03"]
    events = {
        "the pool's workers start": lambda pid: len(session_pids(pid)) >= 3,
        "a shard's temp file appears": lambda pid: bool(hidden_temps(snapshot)),
    }
    counts = dict(kills=0, finished_first=0, temp_files_left=0, shards_rewritten_before_kill=0)
    for i, point in enumerate(kill_points(1501, duration, list(events))):
        change()
        killed = kill(args, point, events)
        where = f"trial {i} ({point}): {killed}"
        counts["kills" if killed.killed else "finished_first"] += 1
        counts["temp_files_left"] += len(hidden_temps(snapshot))
        assert killed.orphans == (), where
        # Every shard there is whole: the old one, or a new one that verifies.
        assert verify_snapshot(snapshot) == [], where  # what `citywok verify` checks
        now = tree_digest(snapshot)
        counts["shards_rewritten_before_kill"] += sum(
            1 for p, h in now.items() if Path(p).suffix == ".lmdb"
            and old.get(p.replace(str(snapshot), str(pristine_snapshot))) != h
        )  # fmt: skip
        rerun = citywok(*args)
        assert rerun.returncode == 0, f"{where}\nre-run: {ok(rerun)}"
        assert hidden_temps(snapshot) == [], f"{where}: the re-run left {hidden_temps(snapshot)}"
        assert shard_contents(snapshot) == expected, where
    fault_figures.add("kill -9", "citywok index (2 workers)", **counts, orphans=0,
                      verify_failed=0, rerun_failed=0, leftovers_after_rerun=0)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# citywok publish: file:// and SeaweedFS


def s3_env(server: S3Server) -> dict[str, str]:
    return dict(os.environ, CITYWOK_S3_ENDPOINT_URL=server.endpoint_url,
                AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)  # fmt: skip


@dataclass
class Buckets:
    """Fresh buckets holding one version of snapshot ``a``, one per trial."""

    kind: str
    make: Callable[[int], tuple[BlobStore, str]]  # trial -> (bucket, its URL)
    env: dict[str, str] | None


@pytest.fixture(params=["file", "seaweedfs"])
def buckets(request: pytest.FixtureRequest, tmp_path: Path, snapshots: Snapshots) -> Buckets:
    if request.param == "file":
        pristine = tmp_path / "pristine-bucket"
        publish_snapshot(snapshots.a, LocalBlobStore(pristine))

        def local(i: int) -> tuple[BlobStore, str]:
            root = tmp_path / f"bucket-{i}"
            restore(pristine, root)
            return LocalBlobStore(root), root.as_uri()

        return Buckets("file://", local, None)
    server: S3Server = request.getfixturevalue("seaweedfs")
    name = request.getfixturevalue("s3_bucket")
    env = s3_env(server)
    settings = S3Settings(endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key)  # fmt: skip

    def s3(i: int) -> tuple[BlobStore, str]:
        url = f"s3://{name}/trial-{i}"
        bucket = S3BlobStore(url, settings)
        publish_snapshot(snapshots.a, bucket)
        return bucket, url

    return Buckets("SeaweedFS", s3, env)


def test_a_killed_publish_leaves_latest_complete_and_a_rerun_cleans_up(
    buckets: Buckets, snapshots: Snapshots, fault_figures: FaultFigures
) -> None:
    scratch, scratch_url = buckets.make(-1)
    duration = timed(lambda: citywok("publish", snapshots.b, scratch_url, env=buckets.env))
    b_content = content_of(scratch, complete_latest(scratch))

    bucket: BlobStore = scratch

    def root() -> Path:
        assert isinstance(bucket, LocalBlobStore)
        return bucket.root

    events: dict[str, Callable[[int], bool]] = {}
    if buckets.kind == "file://":
        events["a blob's temp file appears"] = lambda pid: bool(hidden_temps(root() / "blobs"))
    events["the new manifest appears"] = lambda pid: len(list_versions(bucket)) > 1
    events["a new blob appears"] = lambda pid: len(bucket.list("blobs/")) > 2
    counts = dict(kills=0, finished_first=0, latest_moved_before_kill=0, manifests_left_unused=0,
                  temp_files_left=0)  # fmt: skip
    for i, point in enumerate(kill_points(1502, duration, list(events))):
        bucket, url = buckets.make(i)
        before = complete_latest(bucket)
        killed = kill(["publish", snapshots.b, url], point, events, env=buckets.env)
        where = f"trial {i} ({point}) on {buckets.kind}: {killed}"
        counts["kills" if killed.killed else "finished_first"] += 1
        assert killed.orphans == (), where
        now = complete_latest(bucket)  # latest names a complete manifest, whatever the moment
        assert now == before or content_of(bucket, now) == b_content, where
        counts["latest_moved_before_kill"] += now != before and killed.killed
        counts["manifests_left_unused"] += len(list_versions(bucket)) - 1 - (now != before)
        if isinstance(bucket, LocalBlobStore):
            counts["temp_files_left"] += len(hidden_temps(bucket.root))
        rerun = citywok("publish", snapshots.b, url, env=buckets.env)
        assert rerun.returncode == 0, f"{where}\nre-run: {ok(rerun)}"
        latest = complete_latest(bucket)
        assert content_of(bucket, latest) == b_content, where
        if isinstance(bucket, LocalBlobStore):
            assert hidden_temps(bucket.root) == [], f"{where}: left {hidden_temps(bucket.root)}"
        # A manifest the killed publish wrote but never made latest does not count as a version.
        prune_versions(bucket, keep=2, grace_s=0)
        assert list_versions(bucket) == sorted({before, latest}), where
        every_manifest_complete(bucket)
    fault_figures.add("kill -9", f"citywok publish ({buckets.kind})", **counts, orphans=0,
                      latest_incomplete=0, rerun_failed=0, leftovers_after_rerun=0)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# citywok pull


def test_a_killed_pull_leaves_current_complete_and_a_rerun_removes_its_staging(
    snapshots: Snapshots, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    bucket_dir = tmp_path / "bucket"
    url = bucket_dir.as_uri()
    bucket = LocalBlobStore(bucket_dir)
    pristine = tmp_path / "pristine-pulled"
    a_version = publish_snapshot(snapshots.a, bucket).version
    pull_version(bucket, pristine)
    publish_snapshot(snapshots.b, bucket)
    b_version = complete_latest(bucket)
    pulled = tmp_path / "pulled"
    restore(pristine, pulled)
    duration = timed(lambda: citywok("pull", url, "--to", pulled))
    versions = pulled / "versions"

    def staging() -> list[Path]:
        return sorted(versions.glob(".*.tmp"))

    events = {
        "the staging folder appears": lambda pid: bool(staging()),
        "a shard lands in the staging folder": lambda pid: any(any(s.glob("*.lmdb")) for s in staging()),
    }  # fmt: skip
    counts = dict(kills=0, finished_first=0, switched_before_kill=0, staging_folders_left=0)
    for i, point in enumerate(kill_points(1503, duration, list(events))):
        restore(pristine, pulled)
        killed = kill(["pull", url, "--to", pulled], point, events)
        where = f"trial {i} ({point}): {killed}"
        counts["kills" if killed.killed else "finished_first"] += 1
        assert killed.orphans == (), where
        current = (pulled / "current").resolve()
        manifest = json.loads((current / "manifest.json").read_text())
        assert manifest["version"] in (a_version, b_version), where
        assert verify_snapshot(current) == [], where
        counts["switched_before_kill"] += manifest["version"] == b_version and killed.killed
        counts["staging_folders_left"] += len(staging())
        rerun = citywok("pull", url, "--to", pulled)
        assert rerun.returncode == 0, f"{where}\nre-run: {ok(rerun)}"
        assert rerun.stdout.strip() == b_version, where
        assert (pulled / "current").resolve().name == b_version, where
        assert staging() == [] and not list(pulled.glob(".current.*")), where
        assert hidden_temps(pulled) == [], where
    fault_figures.add("kill -9", "citywok pull", **counts, orphans=0, current_incomplete=0,
                      rerun_failed=0, leftovers_after_rerun=0)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# citywok prune


def test_a_killed_prune_never_leaves_a_manifest_without_its_blobs(
    snapshots: Snapshots, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    pristine = tmp_path / "pristine-bucket"
    for snap in (snapshots.a, snapshots.b, snapshots.a, snapshots.b):  # four versions
        publish_snapshot(snap, LocalBlobStore(pristine))
    assert len(list_versions(LocalBlobStore(pristine))) == 4
    bucket_dir = tmp_path / "bucket"
    restore(pristine, bucket_dir)
    bucket = LocalBlobStore(bucket_dir)
    args: list[str | os.PathLike[str]] = ["prune", bucket_dir.as_uri(),
                                          "--keep", "1", "--grace", "0"]  # fmt: skip
    duration = timed(lambda: citywok(*args))
    latest = complete_latest(bucket)
    kept_blobs = {s.key for s in read_manifest(bucket, latest).shards}
    assert {o.key for o in bucket.list("blobs/")} == kept_blobs

    def manifests() -> int:
        return len(list((bucket_dir / "versions").glob("*.json")))

    def blobs() -> int:
        return len(list((bucket_dir / "blobs" / "sha256").iterdir()))

    events = {"a manifest is deleted": lambda pid: manifests() < 4,
              "a blob is deleted": lambda pid: blobs() < 5}  # fmt: skip
    counts = dict(kills=0, finished_first=0, manifests_deleted_before_kill=0,
                  blobs_deleted_before_kill=0)  # fmt: skip
    for i, point in enumerate(kill_points(1504, duration, list(events))):
        restore(pristine, bucket_dir)
        killed = kill(args, point, events)
        where = f"trial {i} ({point}): {killed}"
        counts["kills" if killed.killed else "finished_first"] += 1
        assert killed.orphans == (), where
        assert complete_latest(bucket) == latest, where
        every_manifest_complete(bucket)
        counts["manifests_deleted_before_kill"] += 4 - manifests()
        counts["blobs_deleted_before_kill"] += 5 - blobs()
        rerun = citywok(*args)
        assert rerun.returncode == 0, f"{where}\nre-run: {ok(rerun)}"
        assert list_versions(bucket) == [latest], where
        assert {o.key for o in bucket.list("blobs/")} == kept_blobs, where
        assert hidden_temps(bucket_dir) == [], where
    fault_figures.add("kill -9", "citywok prune", **counts, orphans=0, latest_incomplete=0,
                      manifest_without_blobs=0, rerun_failed=0)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# A Dagster run (raw_audio and fingerprints of every video, tests/faults/dagster_run.py)

REPO = Path(__file__).resolve().parents[2]
# Two videos a run in CI (a Dagster run is mostly process start here), all four when long.
VIDEOS = ("show-s01e01", "show-s02e01", "show-s01e02", "show-s02e02")[: 4 if LONG else 2]


def test_killed_dagster_runs_leave_whole_artefacts_and_a_rerun_completes_them(
    library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_figures: FaultFigures
) -> None:
    import sqlite3

    import dagster as dg

    from citywok_pipeline.definitions import build_definitions
    from citywok_pipeline.embedded import evaluate_sensor, prepare_dagster_home

    media, home, dagster_home = tmp_path / "media", tmp_path / "home", tmp_path / "dagster"
    shutil.copytree(library.media, media)
    settings = {"CITYWOK_HOME": str(home), "CITYWOK_MEDIA_ROOT": str(media),
                "DAGSTER_HOME": str(prepare_dagster_home(dagster_home))}  # fmt: skip
    # Only these settings: a CITYWOK_BUCKET_URL or database of the shell is not this test's.
    for name in [n for n in os.environ if n.startswith("CITYWOK_")]:
        monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:  # the media scan adds the partitions
        found = evaluate_sensor(build_definitions(), instance, "media_scan_sensor")
        for request in found.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        assert {r.partition_key for r in found.run_requests} >= set(VIDEOS)
    artefacts = home / "artefacts"
    env = dict(os.environ)  # as patched above
    args = [sys.executable, "-m", "tests.faults.dagster_run", *VIDEOS]

    def stored() -> dict[str, str]:
        return {p: h for p, h in tree_digest(artefacts).items() if not Path(p).name.startswith(".")}

    started_ns = 0

    def written(k: int) -> Callable[[int], bool]:
        def check(pid: int) -> bool:
            return sum(1 for p in artefacts.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.stat().st_mtime_ns >= started_ns) >= k  # fmt: skip

        return check

    rng = random.Random(1505)
    counts = dict(kills=0, finished_first=0, temp_files_left=0, runs_left_started=0)
    seen: list[dict[str, str]] = []
    for i in range(TRIALS):
        kind = i % 3
        if kind == 0:
            k = rng.randint(1, 2 * len(VIDEOS))
            point, when = Point(rng.uniform(0, 0.005), f"artefact {k} is written"), written(k)
        elif kind == 1:
            point = Point(rng.uniform(0, 0.003), "an artefact's temp file appears")
            when = lambda pid: bool(hidden_temps(artefacts))  # noqa: E731
        else:
            point = Point(rng.uniform(0, 0.05), "ffmpeg decodes a video")
            when = lambda pid: len(session_pids(pid)) >= 2  # noqa: E731
        started_ns = time.time_ns()
        killed = run_killed(args, after_s=point.after_s, when=when, env=env, cwd=REPO)
        where = f"trial {i} ({point}): {killed}"
        counts["kills" if killed.killed else "finished_first"] += 1
        counts["temp_files_left"] += len(hidden_temps(artefacts))
        assert killed.orphans == (), where
        catalog = sqlite3.connect(home / "catalog.sqlite")
        try:
            assert catalog.execute("PRAGMA integrity_check").fetchone() == ("ok",), where
        finally:
            catalog.close()
        seen.append(stored())

    rerun = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
                           check=False)  # fmt: skip
    assert rerun.returncode == 0, f"re-run: {ok(rerun)}"
    final = stored()
    assert len(final) == 2 * len(VIDEOS), sorted(final)
    # Whatever a killed run left is what a complete run writes, byte for byte: none torn.
    for i, state in enumerate(seen):
        torn = [p for p, h in state.items() if final.get(p) != h]
        assert not torn, f"trial {i} left {torn}"
    assert hidden_temps(home) == [], f"the re-run left {hidden_temps(home)}"
    with dg.DagsterInstance.get() as instance:
        for key in ("raw_audio", "fingerprints"):
            done = instance.get_materialized_partitions(dg.AssetKey(key))
            assert done >= set(VIDEOS), f"{key}: {sorted(done)}"
        counts["runs_left_started"] = len(
            instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        )
    fault_figures.add("kill -9", f"a Dagster run ({len(VIDEOS)} videos: raw_audio, fingerprints)",
                      **counts, orphans=0,
                      artefacts_torn=0, rerun_failed=0, leftovers_after_rerun=0)  # fmt: skip
