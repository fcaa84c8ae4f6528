"""Where per-video artefacts and shards are kept: a local folder, or an S3 bucket (R2).

One interface, two implementations. Keys are relative, slash-separated paths
(``raw_audio/showa-s01e03.flac``). Every write is atomic: a local file is written aside and
renamed into place; an S3 PUT is atomic by itself. Readers never see half an artefact.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from ..files import file_sha256
from ..publishing.bucket import s3_client
from ..settings import citywok_home


class ArtefactNotFoundError(KeyError):
    """No artefact under that key; the message names the store's URI for it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "artefact not found"


@dataclass(frozen=True)
class StoredArtefact:
    """One artefact written: where it is, how big, and its sha256."""

    key: str
    uri: str
    size: int
    sha256: str


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad artefact key {key!r}: a relative path without '.', '..' or '//'")
    return key


class ArtefactStore(dg.ConfigurableResource):
    """The artefact store interface; use :class:`LocalArtefactStore` or :class:`S3ArtefactStore`."""

    def put(self, key: str, data: bytes) -> StoredArtefact:
        """Store ``data`` under ``key`` atomically, replacing what was there."""
        raise NotImplementedError

    def put_file(self, key: str, path: str | os.PathLike[str]) -> StoredArtefact:
        """Store a local file's bytes under ``key`` atomically."""
        return self.put(key, Path(path).read_bytes())

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises :class:`ArtefactNotFoundError`."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key`` if it is there."""
        raise NotImplementedError

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted."""
        raise NotImplementedError

    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a URI (``file://...`` or ``s3://...``)."""
        raise NotImplementedError


class LocalArtefactStore(ArtefactStore):
    """Artefacts as files under a folder (the embedded default: ``$CITYWOK_HOME/artefacts``)."""

    root: str | None = Field(
        default=None, description="Folder for the artefacts; default $CITYWOK_HOME/artefacts."
    )

    @property
    def path(self) -> Path:
        return Path(self.root) if self.root else citywok_home() / "artefacts"

    def _file(self, key: str) -> Path:
        return self.path.joinpath(*_check_key(key).split("/"))

    def put(self, key: str, data: bytes) -> StoredArtefact:
        target = self._write_aside(key, lambda f: f.write(data))
        return StoredArtefact(key, target.as_uri(), len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: str | os.PathLike[str]) -> StoredArtefact:
        def copy(f: Any) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        target = self._write_aside(key, copy)
        return StoredArtefact(key, target.as_uri(), target.stat().st_size, file_sha256(target))

    def _write_aside(self, key: str, write: Any) -> Path:
        """Write a temporary file beside the target with ``write(f)``, then rename it into place."""
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def get(self, key: str) -> bytes:
        target = self._file(key)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise ArtefactNotFoundError(f"{target.as_uri()}: no such artefact") from None

    def exists(self, key: str) -> bool:
        return self._file(key).is_file()

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str = "") -> list[str]:
        root = self.path
        if not root.is_dir():
            return []
        found = (
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return sorted(k for k in found if k.startswith(prefix))

    def uri(self, key: str) -> str:
        return self._file(key).absolute().as_uri()


class S3ArtefactStore(ArtefactStore):
    """Artefacts as objects in an S3-compatible bucket (Cloudflare R2 in production).

    The client is built from the nested dagster-aws ``S3Resource``'s settings with boto3's
    checksums set to ``when_required``: boto3 >= 1.36 otherwise sends checksum headers that
    R2 rejects. For R2 give ``endpoint_url`` ``https://<account>.r2.cloudflarestorage.com`` and
    region ``auto``.
    """

    bucket_url: str = Field(
        description="s3://bucket/prefix; artefacts are kept under <prefix>/artefacts/."
    )
    s3: S3Resource

    _client: Any = PrivateAttr(default=None)

    @property
    def bucket(self) -> str:
        return self._location()[0]

    def _location(self) -> tuple[str, str]:
        parsed = urlparse(self.bucket_url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(
                f"bucket_url must look like s3://bucket/prefix, got {self.bucket_url!r}"
            )
        return parsed.netloc, posixpath.join(parsed.path.strip("/"), "artefacts")

    def _object(self, key: str) -> str:
        return posixpath.join(self._location()[1], _check_key(key))

    def client(self) -> Any:
        """The boto3 S3 client (one per resource instance)."""
        if self._client is None:
            s3 = self.s3
            self._client = s3_client(
                endpoint_url=s3.endpoint_url, region_name=s3.region_name, use_ssl=s3.use_ssl,
                verify=s3.verify, aws_access_key_id=s3.aws_access_key_id,
                aws_secret_access_key=s3.aws_secret_access_key,
                aws_session_token=s3.aws_session_token, profile_name=s3.profile_name,
                max_attempts=s3.max_attempts,
            )  # fmt: skip
        return self._client

    def put(self, key: str, data: bytes) -> StoredArtefact:
        self.client().put_object(Bucket=self.bucket, Key=self._object(key), Body=data)
        return StoredArtefact(key, self.uri(key), len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: str | os.PathLike[str]) -> StoredArtefact:
        # Streamed, multipart above 64 MiB (a season shard can be large); a multipart upload
        # becomes visible only when it completes, so this is atomic too.
        from boto3.s3.transfer import TransferConfig

        self.client().upload_file(
            str(path), self.bucket, self._object(key),
            Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20),
        )  # fmt: skip
        return StoredArtefact(
            key, self.uri(key), Path(path).stat().st_size, file_sha256(Path(path))
        )

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return (
                self.client().get_object(Bucket=self.bucket, Key=self._object(key))["Body"].read()
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise ArtefactNotFoundError(f"{self.uri(key)}: no such artefact") from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client().head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=self.bucket, Key=self._object(key))

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self._location()[1] + "/"
        out: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            out.extend(obj["Key"][len(base) :] for obj in page.get("Contents", []))
        return sorted(out)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"
