"""Races on a real S3 server (SeaweedFS), between real `citywok` processes: four publishers at
once, round after round, and a publish racing a prune. No update is lost (every version a
publisher was told it made latest is in the chain of ``latest.json``'s ``previous``), and no
blob is missing (every manifest on that chain, and the latest, can be pulled whole).

tests/publishing/test_versions.py pins the same races at chosen moments, in one process with
a paused bucket; here they run free, as on four machines.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from citywok_pipeline.blobstore import BlobStore, S3BlobStore, S3Settings
from citywok_pipeline.publishing import (
    list_versions,
    publish_snapshot,
    pull_version,
    read_latest,
    read_manifest,
)
from tests.conftest import S3Server
from tests.publishing.conftest import build_season

from .conftest import CITYWOK, FaultFigures, trials

pytestmark = pytest.mark.slow

PUBLISHERS = 4
ROUNDS = trials(ci=2, long=25)


def s3_env(server: S3Server) -> dict[str, str]:
    return dict(os.environ, CITYWOK_S3_ENDPOINT_URL=server.endpoint_url,
                AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)  # fmt: skip


def s3_store(server: S3Server, url: str) -> S3BlobStore:
    settings = S3Settings(endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key)  # fmt: skip
    return S3BlobStore(url, settings)


@pytest.fixture(scope="module")
def publisher_snapshots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One snapshot per publisher: a season they all share and one of their own."""
    root = tmp_path_factory.mktemp("race-snapshots")
    dirs = []
    for i in range(PUBLISHERS):
        d = root / f"publisher-{i}"
        build_season(d, "shared-s01", (1, 2))
        build_season(d, f"own{i}-s01", (10 + i, 20 + i))
        dirs.append(d)
    return dirs


def run_together(commands: list[list[str | os.PathLike[str]]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:  # fmt: skip
    """Start every command at once and wait for all of them."""
    procs = [subprocess.Popen([str(CITYWOK), *map(os.fspath, c)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]  # fmt: skip
    out = []
    for c, p in zip(commands, procs, strict=True):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def chain_of_latest(bucket: BlobStore) -> list[str]:
    """latest.json's version and its ``previous`` (those not pruned), newest first, each with
    every blob it lists."""
    latest = read_latest(bucket)
    assert latest is not None
    chain, version = [], latest.version
    present = {o.key for o in bucket.list("blobs/")}
    versions = set(list_versions(bucket))
    while version is not None and version in versions:
        manifest = read_manifest(bucket, version)
        missing = [s.file for s in manifest.shards if s.key not in present]
        assert not missing, f"{version} lists shards the bucket lost: {missing}"
        chain.append(version)
        version = manifest.previous
    return chain


def latest_is_whole(bucket: BlobStore) -> str:
    latest = read_latest(bucket)
    assert latest is not None
    manifest = read_manifest(bucket, latest.version, sha256=latest.manifest_sha256)
    for s in manifest.shards:
        data = bucket.get(s.key)
        assert hashlib.sha256(data).hexdigest() == s.sha256, f"{s.key} of {latest.version}"
    return latest.version


def test_racing_publishers_lose_no_update_and_no_blob(
    seaweedfs: S3Server, s3_bucket: str, publisher_snapshots: list[Path],
    fault_figures: FaultFigures, tmp_path: Path,
) -> None:  # fmt: skip
    url = f"s3://{s3_bucket}/races"
    env = s3_env(seaweedfs)
    bucket = s3_store(seaweedfs, url)
    made_latest: list[str] = []
    counts = dict(publishes=0, made_latest=0, unchanged=0, conflicts=0)
    for r in range(ROUNDS):
        # Each round in another order, so that each publisher starts first in turn.
        order = [publisher_snapshots[(r + i) % PUBLISHERS] for i in range(PUBLISHERS)]
        results = run_together([["publish", d, url] for d in order], env)
        for res in results:
            counts["publishes"] += 1
            assert "Traceback" not in res.stderr, res.stderr
            if res.returncode == 0:
                version = res.stdout.strip().splitlines()[-1]
                made_latest.append(version)
                counts["unchanged" if "unchanged:" in res.stderr else "made_latest"] += 1
            else:
                assert res.returncode == 1, res.stderr
                assert "was not made latest" in res.stderr, res.stderr
                counts["conflicts"] += 1
        assert any(res.returncode == 0 for res in results), f"round {r}: nobody won"
        latest_is_whole(bucket)
    chain = chain_of_latest(bucket)
    lost = sorted(set(made_latest) - set(chain))
    assert not lost, f"versions reported as made latest but overwritten: {lost}"
    assert pull_version(bucket, tmp_path / "pulled").version == chain[0]
    fault_figures.add("races", f"{PUBLISHERS} publishers x {ROUNDS} rounds (SeaweedFS)",
                      **counts, lost_updates=0, missing_blobs=0)  # fmt: skip


def test_a_publish_racing_a_prune_loses_no_blob(
    seaweedfs: S3Server, s3_bucket: str, publisher_snapshots: list[Path],
    fault_figures: FaultFigures, tmp_path: Path,
) -> None:  # fmt: skip
    url = f"s3://{s3_bucket}/prune-race"
    env = s3_env(seaweedfs)
    bucket = s3_store(seaweedfs, url)
    a, b = publisher_snapshots[:2]
    publish_snapshot(a, bucket)
    publish_snapshot(b, bucket)
    counts = dict(rounds=0, published=0, prunes=0, blobs_deleted=0)
    for r in range(ROUNDS):
        # The prune (keeping only the latest, no grace) deletes the blobs of the snapshot that
        # the publish, at the same moment, puts back on top and so reuses.
        again = a if r % 2 == 0 else b
        publish, prune = run_together(
            [["publish", again, url], ["prune", url, "--keep", "1", "--grace", "0"]], env
        )
        assert publish.returncode == 0, publish.stderr
        assert prune.returncode == 0, prune.stderr
        counts["rounds"] += 1
        counts["published"] += 1
        counts["prunes"] += 1
        counts["blobs_deleted"] += int(prune.stdout.split(" and ")[1].split()[0])
        version = latest_is_whole(bucket)
        assert version == publish.stdout.strip().splitlines()[-1]
        chain_of_latest(bucket)
    assert pull_version(bucket, tmp_path / "pulled").version == read_latest(bucket).version  # type: ignore[union-attr]
    fault_figures.add("races", f"a publish racing a prune x {ROUNDS} (SeaweedFS)", **counts,
                      missing_blobs=0, latest_incomplete=0)  # fmt: skip
