"""The one blob store, on a local folder and on a real S3 server (SeaweedFS): the same tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from citywok_pipeline.blobstore import (
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    LocalBlobStore,
    PreconditionFailedError,
    S3BlobStore,
    S3Settings,
    check_key,
    open_store,
)
from tests.conftest import S3Server
from tests.publishing.conftest import s3_bucket_for, s3_settings


@pytest.fixture(params=["local", "seaweedfs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """A fresh store: a local folder, or a prefix of a new bucket on real SeaweedFS."""
    if request.param == "local":
        return open_store((tmp_path / "bucket").as_uri())
    return s3_bucket_for(request.getfixturevalue("seaweedfs"), request.getfixturevalue("s3_bucket"))


def test_put_replaces_atomically_and_get_list_delete_see_what_is_there(
    store: BlobStore, tmp_path: Path
) -> None:
    first = store.put("raw_audio/x.flac", b"one")
    source = tmp_path / "two.bin"
    source.write_bytes(b"two, from a file")
    second = store.put("raw_audio/x.flac", source)
    store.put("fingerprints/x.cwfp.zst", b"three")

    assert store.get("raw_audio/x.flac") == b"two, from a file"
    assert (first.size, first.sha256) == (3, hashlib.sha256(b"one").hexdigest())
    assert second.sha256 == hashlib.sha256(b"two, from a file").hexdigest()
    assert second.uri == store.uri("raw_audio/x.flac")
    assert [o.key for o in store.list()] == ["fingerprints/x.cwfp.zst", "raw_audio/x.flac"]
    assert [(o.key, o.size) for o in store.list("raw_audio/")] == [("raw_audio/x.flac", 16)]
    assert store.exists("raw_audio/x.flac") and not store.exists("raw_audio/y.flac")
    store.delete("raw_audio/x.flac")
    store.delete("raw_audio/x.flac")  # deleting what is gone is fine
    assert not store.exists("raw_audio/x.flac")
    with pytest.raises(BlobNotFoundError, match=r"raw_audio/x\.flac: no such object"):
        store.get("raw_audio/x.flac")
    assert store.read_or_none("raw_audio/x.flac") is None


def test_put_new_creates_only_what_is_absent(store: BlobStore) -> None:
    assert store.put_new("blobs/sha256/aa", b"first")
    assert not store.put_new("blobs/sha256/aa", b"second")
    assert store.get("blobs/sha256/aa") == b"first"


def test_replace_is_a_compare_and_swap_on_the_etag(store: BlobStore) -> None:
    etag = store.replace("latest.json", b"v1", if_match=None)
    with pytest.raises(PreconditionFailedError, match=r"latest\.json"):
        store.replace("latest.json", b"v1 again", if_match=None)
    blob = store.read("latest.json")
    assert blob.data == b"v1" and blob.etag == etag
    new = store.replace("latest.json", b"v2", if_match=etag)
    with pytest.raises(PreconditionFailedError):
        store.replace("latest.json", b"stale", if_match=etag)
    assert store.read("latest.json") == type(blob)(b"v2", new)


def test_a_child_store_holds_the_keys_under_its_prefix(store: BlobStore) -> None:
    artefacts = store.child("artefacts")
    artefacts.put("shards/a.lmdb", b"shard")
    store.put("latest.json", b"{}")
    assert store.get("artefacts/shards/a.lmdb") == b"shard"
    assert [o.key for o in artefacts.list()] == ["shards/a.lmdb"]
    assert artefacts.uri("shards/a.lmdb") == store.uri("artefacts/shards/a.lmdb")
    assert artefacts.url.endswith("/artefacts")


BAD_KEYS = ["", "/abs", "a/../b", "a//b", "./a", "a/", ".hidden", "a\\b", "a\0b", "sp ace",
            "x" * 1025, "é"]  # fmt: skip


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_bad_key_is_refused_before_any_io(key: str, tmp_path: Path) -> None:
    # An S3 store on a port nothing listens on: a key reaching the network would hang or fail
    # with a connection error, not the ValueError.
    s3 = S3BlobStore("s3://b/p", S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=1))
    for store in (LocalBlobStore(tmp_path / "bucket"), s3):
        for call in (store.get, store.exists, store.delete, store.uri, store.child,
                     lambda k, s=store: s.put(k, b"x"), lambda k, s=store: s.put_new(k, b"x")):  # fmt: skip
            with pytest.raises(ValueError, match="bad blob key"):
                call(key)
    assert not (tmp_path / "bucket").exists()


def test_valid_keys_are_the_ones_the_pipeline_and_publishing_write() -> None:
    for key in ("raw_audio/showa-s01e03.flac", "blobs/sha256/" + "a" * 64, "latest.json",
                "versions/v20261122T101500123456Z-0a1b2c3d.json", "yt-_x-Y9/a=b.c"):  # fmt: skip
        assert check_key(key) == key


def test_listing_skips_temp_files_and_names_that_are_not_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put("shards/a.lmdb", b"a")
    (tmp_path / "shards" / ".a.lmdb.0123.tmp").write_bytes(b"half")
    (tmp_path / "shards" / "bad name").write_bytes(b"?")
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "b.lmdb").write_bytes(b"b")
    assert [o.key for o in store.list()] == ["shards/a.lmdb"]


def test_a_writer_killed_mid_write_leaves_no_object_and_the_old_one_intact(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "bucket")
    store.put("shards/a.lmdb", b"old")
    fifo = tmp_path / "source"
    os.mkfifo(fifo)
    code = (
        "import sys; from citywok_pipeline.blobstore import LocalBlobStore; "
        "LocalBlobStore(sys.argv[1]).put('shards/a.lmdb', sys.argv[2])"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "bucket"), str(fifo)])
    with open(fifo, "wb") as pipe:
        pipe.write(b"new, half written" * 10_000)
        pipe.flush()
        # The writer has read some of the new bytes into its temp file: kill it there.
        deadline = time.monotonic() + 30
        while not list((tmp_path / "bucket" / "shards").glob(".a.lmdb.*.tmp")):
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.01)
        writer.kill()
        writer.wait()
    assert store.get("shards/a.lmdb") == b"old"
    assert [o.key for o in store.list()] == ["shards/a.lmdb"]


def test_a_large_file_goes_up_as_a_conditional_multipart_upload(
    seaweedfs: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    store = s3_bucket_for(seaweedfs, s3_bucket, multipart_threshold=5 << 20)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 45_000)  # 11.5 MB: three parts
    assert store.put_new("blobs/sha256/big", big)
    assert store.get("blobs/sha256/big") == big.read_bytes()
    assert not store.put_new("blobs/sha256/big", big)
    assert store.put("shards/big.lmdb", big).size == big.stat().st_size


class _FailingSecondPart:
    """A client that dies (as a killed process would) after the first part of an upload."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.parts = inner, 0

    def upload_part(self, **kwargs: Any) -> Any:
        self.parts += 1
        if self.parts == 2:
            raise KeyboardInterrupt("killed between parts")
        return self.inner.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_multipart_upload_that_dies_part_way_leaves_no_object(
    seaweedfs: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    real = s3_bucket_for(seaweedfs, s3_bucket)
    store = S3BlobStore(
        real.url, real.settings, multipart_threshold=5 << 20,
        client=_FailingSecondPart(real.settings.client()),
    )  # fmt: skip
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (11 << 20))
    with pytest.raises(KeyboardInterrupt):
        store.put("shards/big.lmdb", big)
    assert not real.exists("shards/big.lmdb") and real.list() == []


def test_open_store_takes_file_and_s3_urls_and_names_a_bad_one(
    tmp_path: Path, seaweedfs: S3Server
) -> None:
    assert isinstance(open_store((tmp_path / "b").as_uri()), LocalBlobStore)
    s3 = open_store("s3://bucket/some/prefix", s3_settings(seaweedfs))
    assert isinstance(s3, S3BlobStore) and s3.uri("k") == "s3://bucket/some/prefix/k"
    for bad, says in [("ftp://x", "ftp://x"), ("s3:///nobucket", "s3://bucket/prefix"),
                      ("file://host/path", "file:///absolute/path"), ("s3://b/../x", "bad prefix")]:  # fmt: skip
        with pytest.raises(BlobStoreError, match=says):
            open_store(bad)


def test_the_region_is_auto_when_an_endpoint_is_given_as_r2_wants() -> None:
    assert S3Settings(endpoint_url="https://acct.r2.cloudflarestorage.com").region == "auto"
    assert S3Settings(endpoint_url="http://x", region_name="eu-west-1").region == "eu-west-1"
    assert S3Settings().region is None
    env = {"CITYWOK_S3_ENDPOINT_URL": "http://x", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": ""}  # fmt: skip
    settings = S3Settings.from_env(env)
    assert (settings.endpoint_url, settings.aws_access_key_id, settings.region) == (
        "http://x", "k", "auto",
    )  # fmt: skip
    client = settings.client()
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"


def test_what_a_killed_writer_left_is_removed_and_what_a_live_one_writes_is_not(
    tmp_path: Path,
) -> None:
    from citywok_pipeline.files import temp_beside

    store = LocalBlobStore(tmp_path / "bucket")
    store.put("blobs/sha256/aa", b"x")
    dead = tmp_path / "bucket" / "blobs" / "sha256" / ".bb.0123456789ab.tmp"
    dead.write_bytes(b"half of a blob")  # no one holds it: its writer was killed
    with temp_beside(tmp_path / "bucket" / "blobs" / "sha256" / "cc") as live:
        live.write_bytes(b"being written")
        removed = store.remove_leftovers("blobs/")
        assert removed == (dead.as_uri(),)
        assert live.exists()
    assert not live.exists()
    # The next write of a key removes its own killed writer's temp file.
    again = tmp_path / "bucket" / "blobs" / "sha256" / ".aa.0123456789ab.tmp"
    again.write_bytes(b"half")
    store.put("blobs/sha256/aa", b"x")
    assert not again.exists() and store.get("blobs/sha256/aa") == b"x"


def test_an_unfinished_multipart_upload_is_aborted_once_older_than_asked(
    seaweedfs: S3Server, s3_bucket: str
) -> None:
    store = s3_bucket_for(seaweedfs, s3_bucket)
    key = f"{store.prefix}/blobs/sha256/{'a' * 64}"
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    assert store.remove_leftovers("blobs/", older_than_s=3600) == ()
    (removed,) = store.remove_leftovers("blobs/", older_than_s=0)
    assert upload in removed
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert all(u["UploadId"] != upload for u in uploads)
