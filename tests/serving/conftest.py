"""A real `citywok serve` process on 127.0.0.1 over published and pulled generated snapshots."""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.blobstore import LocalBlobStore
from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.publishing import publish_snapshot, pull_version
from tests.conftest import Server, launch_server, stop_process_group
from tests.publishing.conftest import build_season

SR = DEFAULT_PARAMS.sample_rate


def encode_clip(samples: np.ndarray, path: Path) -> Path:
    """Write samples as a WAV, then have ffmpeg encode it to ``path``'s format."""
    wav = path.with_suffix(".src.wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(path)], check=True)
    return path


@dataclass
class Library:
    """A bucket with one published version, pulled into ``served``; audio by episode id."""

    root: Path
    snapshot: Path
    bucket: LocalBlobStore
    served: Path
    audio: dict[str, np.ndarray]
    version: str

    def clip(self, episode_id: str, start_s: float, name: str, length_s: float = 5.0) -> Path:
        x = self.audio[episode_id][int(start_s * SR) : int((start_s + length_s) * SR)]
        return encode_clip(x, self.root / name)


def make_library(root: Path) -> Library:
    snapshot = root / "snapshot"
    audio: dict[str, np.ndarray] = {}
    for season, seeds in (("alpha-s01", (1, 2)), ("beta-s01", (3, 4))):
        for i, x in enumerate(build_season(snapshot, season, seeds)):
            audio[f"{season}e{i + 1:02d}"] = x
    bucket = LocalBlobStore(root / "bucket")
    version = publish_snapshot(snapshot, bucket).version
    pull_version(bucket, root / "served")
    return Library(root, snapshot, bucket, root / "served", audio, version)


ServerFactory = Callable[..., Server]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start `citywok serve SOURCE ARGS...` and wait for /healthz; stopped at the end."""
    started: list[Server] = []

    def start(source: str, *args: str, env: dict[str, str] | None = None) -> Server:
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        server = launch_server(source, *args, log=log, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process_group(server.proc)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return make_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def server(library: Library, start_server: ServerFactory) -> Server:
    """A server over the pull directory, not watching (the swap tests start their own)."""
    return start_server(str(library.served), "--poll", "0", "--max-upload", "300000")
