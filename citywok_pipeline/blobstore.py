"""The one blob store: the pipeline's artefacts and the published versions, in a local folder or
an S3-compatible bucket (Cloudflare R2 in production, SeaweedFS in the tests). Dagster-free.

:func:`open_store` opens a bucket URL (``file:///path`` or ``s3://bucket/prefix``); the CLI,
the server, the Dagster resources and the definitions all open stores through it. Both
backends give the same guarantees, which publishing and the assets rely on:

- **Keys** are relative POSIX paths whose segments match ``[A-Za-z0-9_][A-Za-z0-9._=-]*``, at
  most 1,024 bytes (:func:`check_key`); any other key is refused with a ``ValueError`` naming
  it, before any I/O. Listings skip objects whose names are not valid keys.
- **Writes are atomic**: a reader sees the old object or the new one, never half of one.
  Locally a write goes to a hidden temp file beside its target (``.<name>.<uuid>.tmp``), then
  a rename (:meth:`BlobStore.put`) or a hard link, which fails when the name exists
  (:meth:`BlobStore.put_new`); on S3 a write is one PUT, or a multipart upload that appears
  only when it completes. A killed writer leaves at most a hidden temp file (held under
  a ``flock`` while written) or an unfinished multipart upload, never listed, which
  :meth:`BlobStore.remove_leftovers` removes (``prune`` runs it).
- **Conditional writes**: :meth:`BlobStore.put_new` creates only if absent (S3
  ``If-None-Match: *``); :meth:`BlobStore.replace` is a compare-and-swap on the ETag (S3
  ``If-Match``; locally under an exclusive ``flock``, the ETag being the sha256 of the bytes).

The S3 client is built in one place, :meth:`S3Settings.client`: region ``auto`` when an
endpoint is given and no region (as R2 wants), and botocore's checksums ``when_required``
(boto3 >= 1.36 otherwise sends checksum headers that R2 rejects).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from .files import exclusive_lock, file_sha256, fsync_dir, remove_dead_temps, temp_beside

MAX_KEY_BYTES = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]*")
# Files at or above this size go up as a multipart upload, in parts of this size.
MULTIPART_THRESHOLD = 64 << 20
_CHUNK = 1 << 20

Source = bytes | str | os.PathLike[str]


class BlobStoreError(Exception):
    """The store cannot be used as asked; the message names the URL or key and the reason."""


class BlobNotFoundError(BlobStoreError, KeyError):
    """No object under that key; the message names its URI."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such object"


class PreconditionFailedError(BlobStoreError):
    """A conditional write lost: the object exists (``put_new``) or changed (``replace``)."""


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the ETag to pass to :meth:`BlobStore.replace`."""

    data: bytes
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing."""

    key: str
    size: int
    modified: float  # seconds since the epoch


@dataclass(frozen=True)
class StoredBlob:
    """One object written: its key, where it is, how big, and its sha256."""

    key: str
    uri: str
    size: int
    sha256: str


def check_key(key: str) -> str:
    """``key`` if it is a valid key (see the module docstring), else ``ValueError`` naming it."""
    if (
        not isinstance(key, str)
        or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES
        or not all(_SEGMENT.fullmatch(part) for part in key.split("/"))
    ):
        raise ValueError(
            f"bad blob key {key!r}: a relative path of segments [A-Za-z0-9_][A-Za-z0-9._=-]* "
            f"(no '.', '..', empty segment, leading '/', backslash or NUL), at most "
            f"{MAX_KEY_BYTES} bytes"
        )
    return key


def _check_prefix(prefix: str) -> str:
    """A listing prefix: a key, a key and ``/``, or the start of a key; or empty."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _is_key(name: str) -> bool:
    try:
        check_key(name)
    except ValueError:
        return False
    return True


class BlobStore(ABC):
    """Objects under keys, in a local folder (:class:`LocalBlobStore`) or an S3 bucket
    (:class:`S3BlobStore`); open one with :func:`open_store`."""

    url: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; raises :class:`BlobNotFoundError`."""

    @abstractmethod
    def read(self, key: str) -> Blob:
        """The object's bytes and ETag (for :meth:`replace`); raises :class:`BlobNotFoundError`."""

    @abstractmethod
    def download(self, key: str, out: IO[bytes]) -> None:
        """Stream the object into ``out``; raises :class:`BlobNotFoundError`."""

    @abstractmethod
    def put(self, key: str, source: Source) -> StoredBlob:
        """Store bytes or a file's content under ``key`` atomically, replacing what was there."""

    @abstractmethod
    def put_new(self, key: str, source: Source) -> bool:
        """Create ``key`` from bytes or a file unless it exists; False when it already did."""

    @abstractmethod
    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        """Write ``key`` if its ETag is still ``if_match`` (``None``: if it does not exist).

        Returns the new ETag; raises :class:`PreconditionFailedError` when someone else wrote
        it first.
        """

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it is there."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a URI (``file://...`` or ``s3://...``)."""

    @abstractmethod
    def child(self, prefix: str) -> BlobStore:
        """The store of the keys under ``prefix/`` (``artefacts`` beside the published versions)."""

    def remove_leftovers(
        self, prefix: str = "", *, older_than_s: float = 3600.0
    ) -> tuple[str, ...]:
        """Remove what killed writers left under ``prefix``: locally the hidden temp files no
        live writer holds, on S3 the multipart uploads begun more than ``older_than_s`` ago and
        never completed. Returns their URIs."""
        return ()

    def read_or_none(self, key: str) -> Blob | None:
        try:
            return self.read(key)
        except BlobNotFoundError:
            return None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBlobStore(BlobStore):
    """A folder laid out like the bucket (the embedded default, ``file:///path``).

    The ETag of a file is the sha256 of its bytes. Temp and lock files start with a dot, which
    no key can, and are never listed.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()

    def _file(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _not_found(self, target: Path) -> BlobNotFoundError:
        return BlobNotFoundError(f"{target.as_uri()}: no such object")

    @contextlib.contextmanager
    def _aside(self, target: Path, source: Source) -> Iterator[tuple[Path, int, str]]:
        """A temp file beside ``target`` holding ``source``, synced: (path, size, sha256).
        Removed on leaving the block (after it has been renamed or linked into place)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with temp_beside(target) as tmp:
            h, size = hashlib.sha256(), 0
            with open(tmp, "wb") as f:
                if isinstance(source, bytes):
                    f.write(source)
                    h.update(source)
                    size = len(source)
                else:
                    with open(source, "rb") as src:
                        while chunk := src.read(_CHUNK):
                            f.write(chunk)
                            h.update(chunk)
                            size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            yield tmp, size, h.hexdigest()

    def get(self, key: str) -> bytes:
        target = self._file(key)
        try:
            return target.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(target) from None

    def read(self, key: str) -> Blob:
        data = self.get(key)
        return Blob(data, _sha256_hex(data))

    def download(self, key: str, out: IO[bytes]) -> None:
        target = self._file(key)
        try:
            with open(target, "rb") as f:
                shutil.copyfileobj(f, out, _CHUNK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(target) from None

    def put(self, key: str, source: Source) -> StoredBlob:
        target = self._file(key)
        with self._aside(target, source) as (tmp, size, sha256):
            os.replace(tmp, target)
            fsync_dir(target.parent)
        self._remove_dead_temps_of(target)
        return StoredBlob(key, target.as_uri(), size, sha256)

    @staticmethod
    def _remove_dead_temps_of(target: Path) -> None:
        """A writer of ``target`` that was killed left its temp file: the next write of the
        same key removes it (a re-run cleans up after the run it repeats)."""
        remove_dead_temps(target.parent, f".{target.name}.*.tmp", recursive=False)

    def put_new(self, key: str, source: Source) -> bool:
        target = self._file(key)
        if target.exists():
            return False
        with self._aside(target, source) as (tmp, _, _):
            try:
                # link(2) fails when the name exists: an atomic create-if-absent.
                os.link(tmp, target)
            except FileExistsError:
                return False
            fsync_dir(target.parent)
        self._remove_dead_temps_of(target)
        return True

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(target.with_name(f".{target.name}.lock")):
            try:
                current: str | None = _sha256_hex(target.read_bytes())
            except FileNotFoundError:
                current = None
            if current != if_match:
                raise PreconditionFailedError(
                    f"{target.as_uri()} changed since it was read "
                    f"(expected ETag {if_match}, found {current})"
                )
            with self._aside(target, data) as (tmp, _, sha256):
                os.replace(tmp, target)
                fsync_dir(target.parent)
        return sha256

    def exists(self, key: str) -> bool:
        return self._file(key).is_file()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # Walk only the folder the prefix names (not the artefacts beside the versions, say).
        base = self.root.joinpath(*_check_prefix(prefix).split("/")[:-1])
        out = []
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if _SEGMENT.fullmatch(d)]
            for name in files:
                path = Path(folder, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or not _is_key(key):
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted while listing
                    st = path.stat()
                    out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return self._file(key).as_uri()

    def remove_leftovers(
        self, prefix: str = "", *, older_than_s: float = 3600.0
    ) -> tuple[str, ...]:
        # A live writer holds its temp file locked: age does not matter here. A folder prefix
        # ("blobs/", or "" for all) is searched below; another ("latest.json") in its folder.
        *folders, name = _check_prefix(prefix).split("/")
        base = self.root.joinpath(*folders)
        found = (
            remove_dead_temps(base, f".{name}*.tmp", recursive=False)
            if name
            else remove_dead_temps(base, ".*.tmp")
        )
        return tuple(p.as_uri() for p in found)

    def child(self, prefix: str) -> LocalBlobStore:
        return LocalBlobStore(self._file(prefix))


# ----------------------------------------------------------------------------------------------
# S3


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible service (the fields of dagster-aws's ``S3Resource``)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    profile_name: str | None = None
    use_ssl: bool = True
    verify: bool | str | None = None
    max_attempts: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        """``CITYWOK_S3_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and ``AWS_PROFILE``, where set."""
        return cls(
            endpoint_url=env.get("CITYWOK_S3_ENDPOINT_URL") or None,
            region_name=env.get("AWS_REGION") or None,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            profile_name=env.get("AWS_PROFILE") or None,
        )

    @property
    def region(self) -> str | None:
        """The region: as given, else ``auto`` when an endpoint is given (R2), else boto3's."""
        return self.region_name or ("auto" if self.endpoint_url else None)

    def client(self) -> Any:
        """A boto3 S3 client that works against R2 and SeaweedFS as well as AWS."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
# 412 when the condition fails; 409 when R2/AWS see a concurrent conditional write to the key.
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _conflict(exc: Exception) -> bool:
    return _error_code(exc) in _CONFLICT or _status(exc) in (409, 412)


class S3BlobStore(BlobStore):
    """Objects under ``s3://bucket/prefix`` on any S3-compatible service (R2 in production).

    The client is made on first use, so opening a store does no I/O.
    """

    def __init__(
        self,
        url: str,
        settings: S3Settings | None = None,
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        client: Any = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise BlobStoreError(f"bucket URL must look like s3://bucket/prefix, got {url!r}")
        prefix = parsed.path.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except ValueError as exc:
                raise BlobStoreError(f"{url}: bad prefix ({exc})") from None
        self.bucket = parsed.netloc
        self.prefix = prefix
        self.url = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"
        self.settings = settings or S3Settings()
        self.multipart_threshold = multipart_threshold
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.settings.client()
        return self._client

    def _object(self, key: str) -> str:
        return posixpath.join(self.prefix, check_key(key)) if self.prefix else check_key(key)

    def _not_found(self, key: str) -> BlobNotFoundError:
        return BlobNotFoundError(f"{self.uri(key)}: no such object")

    def _get_object(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._object(key))  # type: ignore[no-any-return]
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise self._not_found(key) from None
            raise

    def get(self, key: str) -> bytes:
        return self._get_object(key)["Body"].read()  # type: ignore[no-any-return]

    def read(self, key: str) -> Blob:
        resp = self._get_object(key)
        return Blob(resp["Body"].read(), resp["ETag"])

    def download(self, key: str, out: IO[bytes]) -> None:
        resp = self._get_object(key)
        for chunk in resp["Body"].iter_chunks(_CHUNK):
            out.write(chunk)

    def _upload(self, key: str, source: Source, cond: dict[str, str]) -> Any:
        """One PUT, or a multipart upload for a large file; ``cond`` the conditional headers."""
        obj = self._object(key)
        if isinstance(source, bytes):
            return self.client.put_object(Bucket=self.bucket, Key=obj, Body=source, **cond)
        if os.stat(source).st_size < self.multipart_threshold:
            with open(source, "rb") as f:
                return self.client.put_object(Bucket=self.bucket, Key=obj, Body=f, **cond)
        # boto3's managed transfer cannot pass If-None-Match to CompleteMultipartUpload, so
        # the parts are sent here; the object appears only when the upload completes.
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=obj)["UploadId"]
        try:
            parts = []
            with open(source, "rb") as f:
                number = 1
                while chunk := f.read(self.multipart_threshold):
                    resp = self.client.upload_part(
                        Bucket=self.bucket, Key=obj, UploadId=upload_id,
                        PartNumber=number, Body=chunk,
                    )  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                    number += 1
            return self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=obj, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, **cond,
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
            raise

    def put(self, key: str, source: Source) -> StoredBlob:
        if isinstance(source, bytes):
            size, sha256 = len(source), _sha256_hex(source)
        else:
            size, sha256 = os.stat(source).st_size, file_sha256(source)
        self._upload(key, source, {})
        return StoredBlob(key, self.uri(key), size, sha256)

    def put_new(self, key: str, source: Source) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._upload(key, source, {"IfNoneMatch": "*"})
        except ClientError as exc:
            if _conflict(exc):
                return False
            raise
        return True

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        from botocore.exceptions import ClientError

        cond = {"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"}
        try:
            resp = self._upload(key, data, cond)
        except ClientError as exc:
            if _conflict(exc):
                raise PreconditionFailedError(
                    f"{self.uri(key)} changed since it was read (conditional write refused: "
                    f"{_error_code(exc) or _status(exc)})"
                ) from None
            raise
        return str(resp["ETag"])

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + _check_prefix(prefix)):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(base) :]
                if _is_key(key):
                    out.append(ObjectInfo(key, int(obj["Size"]), obj["LastModified"].timestamp()))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"

    def remove_leftovers(
        self, prefix: str = "", *, older_than_s: float = 3600.0
    ) -> tuple[str, ...]:
        # Single PUTs leave nothing; a killed multipart upload stays, unlisted and billed.
        import time

        base = f"{self.prefix}/" if self.prefix else ""
        removed = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + _check_prefix(prefix)):
            for up in page.get("Uploads", []):
                if time.time() - up["Initiated"].timestamp() >= older_than_s:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )
                    removed.append(f"s3://{self.bucket}/{up['Key']} (upload {up['UploadId']})")
        return tuple(removed)

    def child(self, prefix: str) -> S3BlobStore:
        return S3BlobStore(
            f"s3://{self.bucket}/{self._object(prefix)}",
            self.settings,
            multipart_threshold=self.multipart_threshold,
            client=self._client,
        )


# ----------------------------------------------------------------------------------------------
# Opening a bucket URL


def is_bucket_url(value: str) -> bool:
    """Whether ``value`` looks like a bucket URL rather than a local path."""
    return urlparse(value).scheme in ("s3", "file")


def open_store(url: str, s3: S3Settings | None = None) -> BlobStore:
    """The store a bucket URL names: ``file:///path`` or ``s3://bucket/prefix``.

    For S3, ``s3`` says how to reach the service (default: :meth:`S3Settings.from_env` of
    ``os.environ``). Nothing is contacted until the store is used.

    Raises
    ------
    BlobStoreError
        The URL is neither, or malformed; the message names it.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise BlobStoreError(f"file bucket URL must be file:///absolute/path, got {url!r}")
        return LocalBlobStore(unquote(parsed.path))
    if parsed.scheme == "s3":
        return S3BlobStore(url, s3 if s3 is not None else S3Settings.from_env(os.environ))
    raise BlobStoreError(f"bucket URL must be s3://bucket/prefix or file:///path, got {url!r}")
