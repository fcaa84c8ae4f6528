from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import LocalYouTube, serve_local_youtube


@pytest.fixture
def youtube() -> Iterator[LocalYouTube]:
    """A local stand-in for youtube.com (unreachable from here): feeds, listings, media."""
    with serve_local_youtube() as server:
        yield server


def make_audio(path: Path, *, seconds: float = 3.0, freq: int = 440) -> Path:
    """A short AAC tone in an .m4a (or whatever ``path``'s suffix says), made by ffmpeg."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=22050", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def tone_m4a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_audio(tmp_path_factory.mktemp("tones") / "tone.m4a")
