"""`citywok publish`, `pull` and `prune` as a user runs them: version ids last, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from citywok_pipeline.files import resolve_snapshot_dir
from citywok_pipeline.snapshot import Snapshot
from citywok_pipeline.snapshot.library_graph import (
    GRAPH_FILE,
    INDEX_FILE,
    MIN_SEGMENTS_ENV,
    build_library_graph,
    library_graph_current,
)
from citywok_pipeline.transcripts.search import SegmentSearcher
from tests.conftest import S3Server
from tests.publishing.conftest import build_season
from tests.snapshot.test_segments import DIM, clustered, unit, write

from .conftest import Citywok

# Season shards of a library with a library graph (the pull tests below).
GRAPH_SIZES = {"show-s01": 700, "show-s02": 500, "show-s03": 300}


def test_publish_and_pull_through_a_folder_bucket_print_the_version_last(
    citywok: Citywok, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    build_season(snapshot, "alpha-s01", (1, 2))
    bucket = (tmp_path / "bucket").as_uri()

    published = citywok("publish", snapshot, bucket)
    assert published.returncode == 0, published
    version = published.stdout.strip().splitlines()[-1]
    assert version.startswith("v") and "1 shard(s) uploaded" in published.stderr

    again = citywok("publish", snapshot, bucket)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == version
    assert "unchanged" in again.stderr

    pulled = citywok("pull", bucket, "--to", tmp_path / "served")
    assert pulled.returncode == 0, pulled
    assert pulled.stdout.strip().splitlines()[-1] == version
    assert os.readlink(tmp_path / "served" / "current") == f"versions/{version}"
    # The pulled directory is a snapshot for the other commands too.
    assert citywok("info", tmp_path / "served").returncode == 0

    pruned = citywok("prune", bucket, "--keep", "1")
    assert pruned.returncode == 0 and "kept 1 version(s)" in pruned.stdout


def test_publish_and_pull_through_s3_use_the_endpoint_and_keys_from_the_environment(
    citywok: Citywok, seaweedfs: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    build_season(snapshot, "alpha-s01", (1,))
    env = {
        **os.environ,
        "CITYWOK_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    url = f"s3://{s3_bucket}/prod"
    published = citywok("publish", snapshot, url, env=env)
    assert published.returncode == 0, published
    pulled = citywok("pull", url, "--to", tmp_path / "served", env=env)
    assert pulled.returncode == 0, pulled
    assert pulled.stdout.split()[-1] == published.stdout.split()[-1]

    wrong_key = citywok(
        "pull", url, "--to", tmp_path / "x", env={**env, "AWS_SECRET_ACCESS_KEY": "no"}
    )
    assert wrong_key.returncode == 2 and url in wrong_key.error_lines()[0]


def test_bad_publish_and_pull_arguments_are_bad_input(citywok: Citywok, tmp_path: Path) -> None:
    bucket = (tmp_path / "bucket").as_uri()
    no_snapshot = citywok("publish", tmp_path / "nothing", bucket)
    assert no_snapshot.returncode == 2 and "nothing" in no_snapshot.error_lines()[0]
    bad_url = citywok("pull", "ftp://host/x", "--to", tmp_path / "served")
    assert bad_url.returncode == 2 and "ftp://host/x" in bad_url.error_lines()[0]
    empty = citywok("pull", bucket, "--to", tmp_path / "served")
    assert empty.returncode == 2 and "nothing published" in empty.error_lines()[0]
    no_server = citywok("serve", tmp_path / "nothing", "--port", "1")
    assert no_server.returncode == 2 and "nothing" in no_server.error_lines()[0]


def _library_with_a_graph(snapshot: Path, rng: np.random.Generator) -> np.ndarray:
    """Three season shards of clustered vectors and their library graph; the queries."""
    vectors = {season: clustered(rng, n) for season, n in GRAPH_SIZES.items()}
    for season, v in vectors.items():
        write(snapshot / f"{season}.lmdb", v, season=season)
    with Snapshot.open(snapshot) as snap:
        assert build_library_graph(snap, min_segments=1, threads=1) is not None
    everything = np.concatenate(list(vectors.values()))
    return unit(everything[rng.choice(len(everything), 30)] + 0.05 * rng.standard_normal((30, DIM)))


def _answers(snapshot: Path, queries: np.ndarray) -> tuple[bool, list[list[tuple]]]:
    """Whether a search uses the library graph, and what it answers to each query."""
    with Snapshot.open(resolve_snapshot_dir(snapshot)) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.notes == [], searcher.notes
        answers = [
            [(h.extra["season"], h.start_s, round(h.score, 5)) for h in
             searcher.hits(searcher.search_vector(q, limit=10))]
            for q in queries
        ]  # fmt: skip
        return searcher.library is not None, answers


def _assert_nearly_the_same(answers: list[list[tuple]], source: list[list[tuple]]) -> None:
    """Two graphs of the same vectors (the pull builds on every core, and a graph built with
    more than one thread differs from build to build): the same best row for every query (a
    perturbed library vector: far ahead of the rest) and nearly the same ten."""
    assert [x[0] for x in answers] == [y[0] for y in source]
    overlap = [len({a[:2] for a in x} & {b[:2] for b in y}) / 10
               for x, y in zip(answers, source, strict=True)]  # fmt: skip
    assert np.mean(overlap) >= 0.95, overlap


def test_a_pulled_version_gets_a_library_graph_and_answers_as_the_source_does(
    citywok: Citywok, seaweedfs: S3Server, s3_bucket: str, tmp_path: Path, rng: np.random.Generator
) -> None:
    snapshot = tmp_path / "snapshot"
    queries = _library_with_a_graph(snapshot, rng)
    env = {
        **os.environ,
        "CITYWOK_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        # The library graph from 1,000 segments (the default, 100,000, is too many to test).
        MIN_SEGMENTS_ENV: "1000",
    }
    url = f"s3://{s3_bucket}/prod"
    published = citywok("publish", snapshot, url, env=env)
    assert published.returncode == 0, published
    served = tmp_path / "served"
    pulled = citywok("pull", url, "--to", served, env=env)
    assert pulled.returncode == 0, pulled
    total = sum(GRAPH_SIZES.values())
    assert f"library graph of {total} segments built" in pulled.stderr, pulled
    version_dir = served / "versions" / pulled.stdout.split()[-1]
    assert (version_dir / GRAPH_FILE).is_file() and (version_dir / INDEX_FILE).is_file()
    verified = citywok("verify", served, env=env)
    assert verified.returncode == 0, verified
    with Snapshot.open(resolve_snapshot_dir(served)) as snap:
        assert library_graph_current(snap)
    source_uses_graph, source_answers = _answers(snapshot, queries)
    pulled_uses_graph, pulled_answers = _answers(served, queries)
    assert source_uses_graph and pulled_uses_graph
    _assert_nearly_the_same(pulled_answers, source_answers)

    # Pulled again: the graph fits, nothing is rebuilt.
    again = citywok("pull", url, "--to", served, env=env)
    assert again.returncode == 0 and "library graph" not in again.stderr, again
    # Below the threshold, none is built (as `citywok index` would build none).
    small = citywok("pull", url, "--to", tmp_path / "small",
                    env={**env, MIN_SEGMENTS_ENV: str(total + 1)})  # fmt: skip
    assert small.returncode == 0 and "library graph" not in small.stderr, small
    assert not list((tmp_path / "small").rglob(INDEX_FILE))
    bad = citywok("pull", url, "--to", tmp_path / "bad", env={**env, MIN_SEGMENTS_ENV: "many"})
    assert bad.returncode == 2 and MIN_SEGMENTS_ENV in bad.error_lines()[0], bad


def test_a_pulled_version_with_one_season_changed_updates_the_last_versions_graph_in_place(
    citywok: Citywok, tmp_path: Path, rng: np.random.Generator
) -> None:
    snapshot = tmp_path / "snapshot"
    queries = _library_with_a_graph(snapshot, rng)
    env = {**os.environ, MIN_SEGMENTS_ENV: "1000"}
    url, served = (tmp_path / "bucket").as_uri(), tmp_path / "served"
    assert citywok("publish", snapshot, url, env=env).returncode == 0
    first = citywok("pull", url, "--to", served, env=env)
    assert first.returncode == 0, first
    old_dir = resolve_snapshot_dir(served)
    old_graph = (old_dir / GRAPH_FILE).read_bytes()
    # One season rebuilt with other segments, its graph updated at the source, published.
    season, n = min(GRAPH_SIZES.items(), key=lambda item: item[1])  # a fifth of the rows
    write(snapshot / f"{season}.lmdb", clustered(rng, n), season=season)
    with Snapshot.open(snapshot) as snap:
        assert build_library_graph(snap, min_segments=1, threads=1) is not None
    assert citywok("publish", snapshot, url, env=env).returncode == 0
    second = citywok("pull", url, "--to", served, env=env)
    assert second.returncode == 0, second
    new_dir = resolve_snapshot_dir(served)
    assert new_dir != old_dir
    described = json.loads((new_dir / INDEX_FILE).read_text())
    assert described["updated"] and (described["rows_added"], described["rows_removed"]) == (n, n)
    assert citywok("verify", served, env=env).returncode == 0
    # The last version's graph (linked, never written into) is as it was, and still fits it.
    assert (old_dir / GRAPH_FILE).read_bytes() == old_graph
    with Snapshot.open(old_dir) as snap:
        assert library_graph_current(snap)
    source_uses_graph, source_answers = _answers(snapshot, queries)
    pulled_uses_graph, pulled_answers = _answers(served, queries)
    assert source_uses_graph and pulled_uses_graph
    _assert_nearly_the_same(pulled_answers, source_answers)


def test_a_pull_killed_while_it_builds_the_graph_leaves_the_version_searched_shard_by_shard(
    citywok_script: Path, citywok: Citywok, tmp_path: Path, rng: np.random.Generator
) -> None:
    # Large enough that building its graph takes about a second here: the kill lands in it.
    snapshot = tmp_path / "snapshot"
    vectors = [clustered(rng, 12_000) for _ in range(2)]
    for i, v in enumerate(vectors):
        write(snapshot / f"show-s0{i + 1}.lmdb", v, season=f"show-s0{i + 1}")
    everything = np.concatenate(vectors)
    queries = unit(
        everything[rng.choice(len(everything), 30)] + 0.05 * rng.standard_normal((30, DIM))
    )
    total = len(everything)
    bucket = (tmp_path / "bucket").as_uri()
    env = {**os.environ, MIN_SEGMENTS_ENV: "1000"}
    published = citywok("publish", snapshot, bucket, env=env)
    assert published.returncode == 0, published
    version = published.stdout.split()[-1]
    served = tmp_path / "served"
    version_dir = served / "versions" / version

    # kill -9 once the version's folder is in place: the graph is built next, then the switch.
    proc = subprocess.Popen(
        [str(citywok_script), "pull", bucket, "--to", str(served)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (version_dir / "manifest.json").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the pull never put the version in place"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the pull ended before it was killed"
    # Never switched to; complete, without a graph, and searched shard by shard as it is.
    assert not (served / "current").exists()
    assert not (version_dir / INDEX_FILE).exists()
    assert citywok("verify", version_dir, env=env).returncode == 0
    _, source_answers = _answers(snapshot, queries)  # no graph: each shard's own
    uses_graph, answers = _answers(version_dir, queries)
    assert not uses_graph and answers == source_answers

    rerun = citywok("pull", bucket, "--to", served, env=env)
    assert rerun.returncode == 0 and rerun.stdout.split()[-1] == version, rerun
    assert f"library graph of {total} segments built" in rerun.stderr, rerun
    assert os.readlink(served / "current") == f"versions/{version}"
    assert sorted(served.rglob(".*.tmp")) == []
    assert citywok("verify", served, env=env).returncode == 0
    uses_graph, answers = _answers(served, queries)
    assert uses_graph
    # Another graph than the shards' own: nearly the same rows (both approximate).
    _assert_nearly_the_same(answers, source_answers)
