"""`citywok publish`, `pull` and `prune` as a user runs them: version ids last, exit codes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import S3Server
from tests.publishing.conftest import build_season

from .conftest import Citywok


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
