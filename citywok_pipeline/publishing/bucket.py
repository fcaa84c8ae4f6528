"""Where published versions live: a local folder or an S3 bucket (Cloudflare R2), one interface.

Keys are relative, slash-separated paths under the bucket URL's prefix. Both implementations
give the guarantees publishing relies on:

- ``put_new``: create-if-absent (S3 ``If-None-Match: *``; locally a hard link, which fails when
  the name exists). Content-addressed blobs and immutable manifests are written this way.
- ``replace``: compare-and-swap on the ETag (S3 ``If-Match``; locally under an exclusive
  ``flock``), so two publishers moving ``latest.json`` cannot lose an update.
- Every write is atomic: a reader sees the old object or the new one, never half of one.

Nothing here imports Dagster; the Dagster artefact store builds its client with :func:`s3_client`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from ..files import exclusive_lock, fsync_dir

# Objects at or above this size are sent as a multipart upload, in parts of this size.
MULTIPART_THRESHOLD = 64 << 20
_CHUNK = 1 << 20


class BucketError(Exception):
    """The bucket cannot be used as asked; the message names the URL or key and the reason."""


class BlobNotFoundError(BucketError, KeyError):
    """No object under that key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such object"


class PreconditionFailedError(BucketError):
    """A conditional write lost: the object exists (``put_new``) or changed (``replace``)."""


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the ETag to pass to :meth:`Bucket.replace`."""

    data: bytes
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch


def s3_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    profile_name: str | None = None,
    use_ssl: bool = True,
    verify: bool | str | None = None,
    max_attempts: int = 5,
) -> Any:
    """A boto3 S3 client that works against R2 and SeaweedFS as well as AWS.

    boto3 >= 1.36 sends checksum headers R2 has rejected: checksums are ``when_required``.
    Give R2 its ``endpoint_url`` (``https://<account>.r2.cloudflarestorage.com``) and region
    ``auto``.
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile_name)
    return session.client(
        "s3",
        region_name=region_name,
        endpoint_url=endpoint_url,
        use_ssl=use_ssl,
        verify=verify,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad bucket key {key!r}: a relative path without '.', '..' or '//'")
    return key


class Bucket(ABC):
    """The versions bucket interface: :class:`LocalBucket` or :class:`S3Bucket`."""

    url: str

    @abstractmethod
    def read(self, key: str) -> Blob:
        """The object's bytes and ETag; raises :class:`BlobNotFoundError`."""

    @abstractmethod
    def download(self, key: str, out: IO[bytes]) -> None:
        """Stream the object into ``out``; raises :class:`BlobNotFoundError`."""

    @abstractmethod
    def put_new(self, key: str, source: bytes | str | os.PathLike[str]) -> bool:
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
    def uri(self, key: str) -> str: ...

    def read_or_none(self, key: str) -> Blob | None:
        try:
            return self.read(key)
        except BlobNotFoundError:
            return None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBucket(Bucket):
    """A folder laid out like the bucket (the embedded default, ``file:///path``).

    The ETag of a file is the sha256 of its bytes. Temporary and lock files start with a dot
    and are never listed.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()

    def _file(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _aside(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")

    def read(self, key: str) -> Blob:
        target = self._file(key)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"{target.as_uri()}: no such object") from None
        return Blob(data, _sha256_hex(data))

    def download(self, key: str, out: IO[bytes]) -> None:
        target = self._file(key)
        try:
            with open(target, "rb") as f:
                shutil.copyfileobj(f, out, _CHUNK)
        except FileNotFoundError:
            raise BlobNotFoundError(f"{target.as_uri()}: no such object") from None

    def put_new(self, key: str, source: bytes | str | os.PathLike[str]) -> bool:
        target = self._file(key)
        if target.exists():
            return False
        tmp = self._aside(target)
        try:
            with open(tmp, "wb") as f:
                if isinstance(source, bytes):
                    f.write(source)
                else:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, f, _CHUNK)
                f.flush()
                os.fsync(f.fileno())
            try:
                # link(2) fails when the name exists: an atomic create-if-absent.
                os.link(tmp, target)
            except FileExistsError:
                return False
            fsync_dir(target.parent)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        with exclusive_lock(target.with_name(f".{target.name}.lock")):
            yield

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        target = self._file(key)
        tmp = self._aside(target)
        with self._locked(target):
            try:
                current: str | None = _sha256_hex(target.read_bytes())
            except FileNotFoundError:
                current = None
            if current != if_match:
                raise PreconditionFailedError(
                    f"{target.as_uri()} changed since it was read "
                    f"(expected ETag {if_match}, found {current})"
                )
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
                fsync_dir(target.parent)
            finally:
                tmp.unlink(missing_ok=True)
        return _sha256_hex(data)

    def exists(self, key: str) -> bool:
        return self._file(key).is_file()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # Walk only the folder the prefix names (not the artefacts beside it, say).
        base = self.root.joinpath(*prefix.split("/")[:-1])
        if not base.is_dir():
            return []
        out = []
        for p in base.rglob("*"):
            key = p.relative_to(self.root).as_posix()
            if any(part.startswith(".") for part in key.split("/")) or not key.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted while listing
                if p.is_file():
                    st = p.stat()
                    out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return self._file(key).as_uri()


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
# 412 when the condition fails; 409 when R2/AWS see a concurrent conditional write to the key.
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class S3Bucket(Bucket):
    """Objects under ``s3://bucket/prefix`` on any S3-compatible store (R2 in production)."""

    def __init__(self, url: str, client: Any, *, multipart_threshold: int = MULTIPART_THRESHOLD):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise BucketError(f"bucket URL must look like s3://bucket/prefix, got {url!r}")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = client
        self.multipart_threshold = multipart_threshold

    def _object(self, key: str) -> str:
        return posixpath.join(self.prefix, check_key(key)) if self.prefix else check_key(key)

    def _not_found(self, key: str) -> BlobNotFoundError:
        return BlobNotFoundError(f"{self.uri(key)}: no such object")

    def _get_object(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise self._not_found(key) from None
            raise

    def read(self, key: str) -> Blob:
        resp = self._get_object(key)
        return Blob(resp["Body"].read(), resp["ETag"])

    def download(self, key: str, out: IO[bytes]) -> None:
        resp = self._get_object(key)
        for chunk in resp["Body"].iter_chunks(_CHUNK):
            out.write(chunk)

    def put_new(self, key: str, source: bytes | str | os.PathLike[str]) -> bool:
        from botocore.exceptions import ClientError

        size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
        try:
            if size >= self.multipart_threshold and not isinstance(source, bytes):
                self._multipart_new(key, Path(source), size)
            elif isinstance(source, bytes):
                self.client.put_object(
                    Bucket=self.bucket, Key=self._object(key), Body=source, IfNoneMatch="*"
                )
            else:
                with open(source, "rb") as f:
                    self.client.put_object(
                        Bucket=self.bucket, Key=self._object(key), Body=f, IfNoneMatch="*"
                    )
        except ClientError as exc:
            if _error_code(exc) in _CONFLICT or _status(exc) in (409, 412):
                return False
            raise
        return True

    def _multipart_new(self, key: str, path: Path, size: int) -> None:
        # boto3's managed transfer cannot pass If-None-Match to CompleteMultipartUpload, so
        # the parts are sent here; the object appears only when the upload completes.
        obj = self._object(key)
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=obj)["UploadId"]
        try:
            parts = []
            with open(path, "rb") as f:
                number = 1
                while chunk := f.read(self.multipart_threshold):
                    resp = self.client.upload_part(
                        Bucket=self.bucket, Key=obj, UploadId=upload_id,
                        PartNumber=number, Body=chunk,
                    )  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                    number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=obj, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, IfNoneMatch="*",
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
            raise

    def replace(self, key: str, data: bytes, *, if_match: str | None) -> str:
        from botocore.exceptions import ClientError

        cond = {"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"}
        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=self._object(key), Body=data, **cond
            )
        except ClientError as exc:
            if _error_code(exc) in _CONFLICT or _status(exc) in (409, 412):
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
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            for obj in page.get("Contents", []):
                out.append(
                    ObjectInfo(
                        obj["Key"][len(base) :], int(obj["Size"]), obj["LastModified"].timestamp()
                    )
                )
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"


def open_bucket(url: str, env: Mapping[str, str] | None = None) -> Bucket:
    """The bucket a URL names: ``file:///path`` or ``s3://bucket/prefix``.

    For S3 the endpoint and keys come from ``env`` (default ``os.environ``):
    ``CITYWOK_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, and
    ``AWS_REGION`` (default ``auto`` when an endpoint is given, as R2 wants).
    """
    env = os.environ if env is None else env
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BucketError(f"file bucket URL must be file:///absolute/path, got {url!r}")
        return LocalBucket(unquote(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BucketError(f"bucket URL must look like s3://bucket/prefix, got {url!r}")
        endpoint = env.get("CITYWOK_S3_ENDPOINT_URL") or None
        return S3Bucket(
            url,
            s3_client(
                endpoint_url=endpoint,
                region_name=env.get("AWS_REGION") or ("auto" if endpoint else None),
                aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            ),
        )
    raise BucketError(f"bucket URL must be s3://bucket/prefix or file:///path, got {url!r}")


def is_bucket_url(value: str) -> bool:
    return urlparse(value).scheme in ("s3", "file")
