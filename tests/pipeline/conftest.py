"""Fixtures for the pipeline tests: a tiny generated library, instances, a real S3 server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from citywok_pipeline.definitions import build_definitions
from citywok_pipeline.embedded import PassReport, run_pipeline_once
from citywok_pipeline.resources import (
    ArtefactStore,
    CatalogResource,
    SeasonFoldersResource,
    SnapshotDirectoryResource,
    TranscriberResource,
)
from citywok_pipeline.resources.embedder import EmbedderResource
from citywok_pipeline.resources.publishing import PublishedVersionsResource
from tests.conftest import (  # noqa: F401 (re-exported for the pipeline tests)
    S3_KEY,
    S3_SECRET,
    S3Server,
    free_port,
    stop_process_group,
    wait_for_port,
)

REPO = Path(__file__).resolve().parents[2]
# 2 shows x 1 season x 2 episodes x 15 s: two season shards of two videos each. A third
# episode per season is generated too and kept aside, for the tests that add one.
TINY = dict(
    shows=2,
    seasons=1,
    episodes=3,
    duration_s=15.0,
    intro_s=4.0,
    seed=3,
    formats=("mp3", "flac", "m4a"),
)
SPARE = "S01E03"


@pytest.fixture(scope="session")
def tiny_library_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny library, generated once per session; tests get a copy."""
    from citywok_pipeline.demo.library import generate_library

    root = tmp_path_factory.mktemp("tiny-library") / "media"
    generate_library(root, **TINY)  # type: ignore[arg-type]
    return root


@pytest.fixture
def media_root(tiny_library_source: Path, tmp_path: Path) -> Path:
    """A copy of the tiny library without the spare episodes."""
    root = tmp_path / "media"
    shutil.copytree(tiny_library_source, root, ignore=shutil.ignore_patterns(f"*{SPARE}*"))
    return root


@pytest.fixture
def spare_episode(tiny_library_source: Path) -> tuple[Path, str]:
    """A generated episode that is not in ``media_root``: its file and its path relative to the root."""
    path = sorted(tiny_library_source.rglob(f"*{SPARE}*"))[0]
    return path, path.relative_to(tiny_library_source).as_posix()


@dataclass
class Pipeline:
    """A media root, a catalog, an artefact store, a snapshot directory and an instance."""

    media: Path
    home: Path
    artefacts: ArtefactStore
    instance: dg.DagsterInstance

    @property
    def snapshot(self) -> Path:
        return self.home / "snapshot"

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.sqlite"

    @property
    def resources(self) -> dict[str, Any]:
        return {
            "media": SeasonFoldersResource(root=str(self.media)),
            "catalog": CatalogResource(path=str(self.catalog_path)),
            "artefacts": self.artefacts,
            "snapshots": SnapshotDirectoryResource(path=str(self.snapshot)),
            # The packaged tiny.en on the CPU (loaded once per test process).
            "transcriber": TranscriberResource(backend="faster-whisper", device="cpu"),
            # The packaged all-MiniLM-L6-v2 on the CPU.
            "embedder": EmbedderResource(device="cpu"),
            "versions": PublishedVersionsResource(bucket_url=(self.home / "published").as_uri()),
        }

    @property
    def defs(self) -> dg.Definitions:
        return build_definitions(self.resources)

    def run(self) -> PassReport:
        """One pass of the sensors and the runs they request, asserting nothing."""
        return run_pipeline_once(self.defs, self.instance)


def sqlite_instance(home: Path) -> dg.DagsterInstance:
    """A persistent instance on SQLite under ``home``, configured by the repo's dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def pipeline(media_root: Path, tmp_path: Path) -> Iterator[Pipeline]:
    """The pipeline on a local artefact store and a SQLite instance."""
    home = tmp_path / "citywok"
    with sqlite_instance(tmp_path / "dagster") as instance:
        yield Pipeline(media_root, home, ArtefactStore(bucket_url=home.as_uri()), instance)


# ----------------------------------------------------------------------------------------------
# Postgres: a fresh database on the local server per test, dropped afterwards.

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
    )
    conn.autocommit = True
    return conn


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty database; its name."""
    name = f"citywok_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = _pg_admin()
    except Exception as exc:  # the message says what is missing
        pytest.fail(
            f"the Postgres tests need a server on {PG_HOST}:{PG_PORT} (user {PG_USER}, trust auth): {exc}"
        )
    from psycopg2 import sql

    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def postgres_instance(
    postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """An instance configured by deploy/dagster-postgres.yaml, credentials from the environment."""
    home = tmp_path / "dagster-pg"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    for name, value in {
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_DB": postgres_database,
        "DAGSTER_PG_USERNAME": PG_USER,
        "DAGSTER_PG_PASSWORD": "",
    }.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


# ----------------------------------------------------------------------------------------------
# SeaweedFS (the `seaweedfs` and `s3_bucket` fixtures) and the process helpers live in
# tests/conftest.py, shared with the publishing and serving tests.

# ----------------------------------------------------------------------------------------------
# `make dev`'s server: the devserver wrapper, started the way a script's `&` starts it.


def graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DevServer:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


def _ignore_sigint() -> None:
    # What `cmd &` in a non-interactive shell does to its child: the trap make dev must survive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def start_dev_server(
    home: Path,
    media: Path,
    log: Path,
    *,
    timeout_s: float = 150,
    extra_env: dict[str, str] | None = None,
) -> Iterator[DevServer]:
    """`python -m citywok_pipeline.devserver` on ``home`` and ``media``, once its code location loaded."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CITYWOK_BUCKET_URL")}
    env.update(CITYWOK_HOME=str(home), CITYWOK_MEDIA_ROOT=str(media), **(extra_env or {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citywok_pipeline.devserver", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_ignore_sigint,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, f"dagster dev exited early:\n{log.read_text()[-3000:]}"
            try:
                if graphql(base, "{ assetNodes { assetKey { path } } }")["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            assert time.monotonic() < deadline, (
                f"the UI did not load the code location:\n{log.read_text()[-3000:]}"
            )
            time.sleep(1)
        yield DevServer(base, proc, log)
    finally:
        stop_process_group(proc)
