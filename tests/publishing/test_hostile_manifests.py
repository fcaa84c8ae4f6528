"""Manifests and ``latest.json`` read back from a bucket are hostile: anyone who can write to
the bucket wrote them. Every name and key is checked to the shapes the format defines before
anything is written, and a local path never leaves its folder."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from citywok_pipeline.blobstore import LocalBlobStore
from citywok_pipeline.publishing import (
    Manifest,
    ManifestError,
    PullError,
    current_version,
    publish_snapshot,
    pull_version,
)
from citywok_pipeline.publishing.versions import read_latest
from tests.conftest import CITYWOK, free_port, stop_process_group

FORGED = "v20991231T235959000000Z-deadbeef"


def forge(bucket: LocalBlobStore, manifest: dict[str, Any], *, version: str = FORGED,
          latest_sha256: str | None = None, manifest_key: str | None = None) -> None:  # fmt: skip
    """Write a manifest and point latest.json at it, as an attacker with bucket keys can."""
    data = json.dumps({**manifest, "version": version}).encode()
    (bucket.root / "versions" / f"{version}.json").write_bytes(data)
    (bucket.root / "latest.json").write_text(json.dumps({
        "version": version,
        "manifest": manifest_key or f"versions/{version}.json",
        "manifest_sha256": latest_sha256 or hashlib.sha256(data).hexdigest(),
        "updated_at": "2099-12-31T23:59:59Z",
    }))  # fmt: skip


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def published(tmp_path: Path, snapshot_dir: Path) -> tuple[LocalBlobStore, dict[str, Any], Path]:
    """A bucket with one good version, pulled into ``served``; its manifest as a dict."""
    bucket = LocalBlobStore(tmp_path / "bucket")
    result = publish_snapshot(snapshot_dir, bucket)
    served = tmp_path / "deep" / "down" / "served"
    pull_version(bucket, served)
    return bucket, json.loads(result.manifest.to_json()), served


@pytest.mark.parametrize(
    "name",
    ["../../escape.lmdb", "../escape.lmdb", "/tmp/escape.lmdb", "sub/dir.lmdb", ".hidden.lmdb",
     "back\\slash.lmdb", "nul\x00.lmdb", "..", "", "no-suffix", "e" * 300 + ".lmdb"],
)  # fmt: skip
def test_a_shard_named_outside_its_folder_is_refused_before_anything_is_written(
    published: tuple[LocalBlobStore, dict[str, Any], Path], tmp_path: Path, name: str
) -> None:
    bucket, manifest, served = published
    evil = copy.deepcopy(manifest)
    evil["shards"][0]["file"] = name
    forge(bucket, evil)
    before = files_under(tmp_path)
    with pytest.raises(PullError, match=r"shards\[0\]\.file"):
        pull_version(bucket, served)
    assert files_under(tmp_path) == before
    assert current_version(served) == manifest["version"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["shards"][0].update(sha256="AB" * 32), r"shards\[0\]\.sha256"),
        (lambda m: m["shards"][0].update(sha256="../../x"), r"shards\[0\]\.sha256"),
        (lambda m: m["shards"][0].update(size=-1), r"shards\[0\]\.size is negative"),
        (lambda m: m["shards"][0].update(size="12"), r"shards\[0\]\.size is str"),
        (lambda m: m["shards"][0].update(episodes=True), r"shards\[0\]\.episodes is bool"),
        (lambda m: m["shards"][0].update(hours=float("nan")), r"shards\[0\]\.hours"),
        (lambda m: m["shards"][0].update(key="blobs/sha256/../../x"), r"shards\[0\]\.key"),
        (lambda m: m["shards"][0].update(season="../x"), r"shards\[0\]\.season"),
        (
            lambda m: m["shards"][1].update(file=m["shards"][0]["file"]),
            r"two shards are both named",
        ),
        (lambda m: m.update(shards={"a": 1}), r"shards is dict, not list"),
        (lambda m: m["shards"].append("x"), r"shards\[2\] is str, not an object"),
        (lambda m: m.update(previous="../../v"), r"previous"),
        (lambda m: m.update(params=None), r"params is NoneType"),
        (lambda m: m.update(format="other"), r"format is 'other'"),
        (lambda m: m.update(content_sha256="0" * 64), r"content_sha256 does not match"),
    ],
)
def test_a_manifest_field_of_the_wrong_shape_is_refused_naming_the_field(
    published: tuple[LocalBlobStore, dict[str, Any], Path], change: Any, field: str
) -> None:
    _, manifest, _ = published
    evil = copy.deepcopy(manifest)
    change(evil)
    with pytest.raises(ManifestError, match=field):
        Manifest.from_json(json.dumps(evil).encode(), label="m.json")


@pytest.mark.parametrize("data", [b"", b"[]", b"null", b"7", b'"x"', b"\xff\xfe", b"[" * 100_000])
def test_a_manifest_that_is_not_a_json_object_is_a_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError, match=r"m\.json: not a usable manifest"):
        Manifest.from_json(data, label="m.json")


def test_a_latest_json_naming_a_manifest_elsewhere_is_refused(
    published: tuple[LocalBlobStore, dict[str, Any], Path], tmp_path: Path
) -> None:
    bucket, manifest, served = published
    forge(bucket, manifest, manifest_key="../../elsewhere.json")
    with pytest.raises(
        ManifestError, match=r"latest\.json: unreadable \(manifest '\.\./\.\./elsewhere"
    ):
        read_latest(bucket)
    with pytest.raises(PullError, match=r"latest\.json"):
        pull_version(bucket, served)
    assert current_version(served) == manifest["version"]


def test_a_manifest_changed_after_latest_json_named_it_is_refused(
    published: tuple[LocalBlobStore, dict[str, Any], Path],
) -> None:
    bucket, manifest, served = published
    forge(bucket, manifest, latest_sha256="0" * 64)
    with pytest.raises(PullError, match=r"sha256 is [0-9a-f]{64}, but .*latest\.json says 0{64}"):
        pull_version(bucket, served)
    assert current_version(served) == manifest["version"]


@pytest.mark.parametrize("version", ["../../x", "/etc", "v1", ".."])
def test_pulling_a_version_that_is_not_a_version_id_is_a_clear_error(
    published: tuple[LocalBlobStore, dict[str, Any], Path], version: str
) -> None:
    bucket, _, served = published
    with pytest.raises(PullError, match="is not a version id"):
        pull_version(bucket, served, version=version)


def test_the_cli_says_a_traversal_version_is_bad_input(
    published: tuple[LocalBlobStore, dict[str, Any], Path], tmp_path: Path
) -> None:
    bucket, _, served = published
    result = subprocess.run(
        [str(CITYWOK), "pull", bucket.url, "--to", str(served), "--version", "../../x"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "'../../x' is not a version id" in result.stderr


def test_serving_a_bucket_whose_manifest_escapes_its_folder_exits_with_bad_input(
    published: tuple[LocalBlobStore, dict[str, Any], Path], tmp_path: Path
) -> None:
    bucket, manifest, _ = published
    evil = copy.deepcopy(manifest)
    evil["shards"][0]["file"] = "../../../planted.lmdb"
    forge(bucket, evil)
    before = files_under(tmp_path)
    # Its own session, stopped whatever happens: a server that wrongly starts must not outlive
    # the test.
    proc = subprocess.Popen(
        [str(CITYWOK), "serve", bucket.url, "--cache", str(tmp_path / "cache" / "a" / "b"),
         "--port", str(free_port()), "--workers", "1", "--poll", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        stop_process_group(proc)
    assert proc.returncode == 2, stderr
    assert "shards[0].file" in stderr and "Traceback" not in stderr
    assert not any("planted" in p for p in files_under(tmp_path) - before)
