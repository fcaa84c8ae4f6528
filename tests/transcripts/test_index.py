"""`citywok index` builds the transcript side too: a generated library is transcribed (the
packaged tiny.en), embedded (the packaged MiniLM) and searchable; re-runs only do what changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from citywok_pipeline.demo.library import generate_library
from citywok_pipeline.indexer import TranscriptSide, index_library
from citywok_pipeline.snapshot import Snapshot, verify_snapshot
from citywok_pipeline.snapshot.segments import needs_rebuild
from citywok_pipeline.transcripts.search import search_snapshot
from tests.snapshot.test_segments import as_format_1

pytestmark = pytest.mark.slow

SEASON = "harbour-lights-s01"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One season of three 20 s episodes of espeak-ng dialogue over music."""
    root = tmp_path_factory.mktemp("index-library") / "media"
    generate_library(root, shows=1, seasons=1, episodes=3, duration_s=20.0, intro_s=4.0, seed=5)
    return root


@pytest.fixture
def media(library: Path, tmp_path: Path) -> Path:
    """A copy of the library without its third episode (kept aside as ``spare``)."""
    root = tmp_path / "media"
    shutil.copytree(library, root, ignore=shutil.ignore_patterns("*S01E03*"))
    return root


@pytest.fixture
def spare(library: Path) -> Path:
    """The third episode's file."""
    return next(library.rglob("*S01E03*"))


def segments_by_episode(snapshot: Path) -> dict[str, list[tuple[float, str]]]:
    with Snapshot.open(snapshot) as snap:
        shard = snap.shards[0]
        seg = shard.segments
        assert seg is not None
        out: dict[str, list[tuple[float, str]]] = {e.episode_id: [] for e in shard.episodes}
        for row in range(len(seg)):
            episode = shard.episodes[int(seg.episode[row])].episode_id
            out[episode].append((float(seg.times[row, 0]), seg.text(row)))
        return out


def test_index_transcribes_embeds_and_finds_what_was_said(
    media: Path, spare: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snap"
    side = TranscriptSide.default()
    report = index_library(media, snapshot, transcripts=side, jobs=1)
    assert not report.failures and report.transcribed == 2 and report.segments > 4
    assert verify_snapshot(snapshot) == []
    said = segments_by_episode(snapshot)
    assert set(said) == {f"{SEASON}e01", f"{SEASON}e02"} and all(said.values())
    # The longest line of the second episode is found there, at its second.
    start, text = max(said[f"{SEASON}e02"], key=lambda s: len(s[1]))
    best = search_snapshot(snapshot, text, limit=1)[0]
    assert (best.episode_id, best.start_s) == (f"{SEASON}e02", pytest.approx(start, abs=0.01))
    assert best.source == f"Harbour Lights/Season 01/Harbour Lights - S01E02.{media_ext(media)}"

    again = index_library(media, snapshot, transcripts=side, jobs=1)
    assert again.seasons_unchanged == [SEASON] and again.transcribed == 0

    # A shard from before the ANN graph is rewritten with it, its segments carried over.
    as_format_1(snapshot / f"{SEASON}.lmdb")
    rebuilt = index_library(media, snapshot, transcripts=side, jobs=1)
    assert rebuilt.seasons_built == [SEASON] and rebuilt.transcribed == 0
    assert segments_by_episode(snapshot) == said
    with Snapshot.open(snapshot) as snap:
        assert not needs_rebuild(snap.shards[0].meta["segments"])

    # A new episode: only it is transcribed; the others' segments are carried over.
    shutil.copy(spare, next(media.rglob("Season 01")))
    added = index_library(media, snapshot, transcripts=side, jobs=1)
    assert added.seasons_built == [SEASON] and added.transcribed == 1
    after = segments_by_episode(snapshot)
    assert after[f"{SEASON}e01"] == said[f"{SEASON}e01"] and after[f"{SEASON}e03"]


def test_a_fingerprints_only_snapshot_gets_transcripts_on_a_full_index(
    media: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snap"
    first = index_library(media, snapshot, jobs=1)
    assert first.transcribed == 0
    with Snapshot.open(snapshot) as snap:
        assert snap.n_segments == 0
    full = index_library(media, snapshot, transcripts=TranscriptSide.default(), jobs=1)
    assert full.decoded == 0 and full.reused == 2 and full.transcribed == 2
    with Snapshot.open(snapshot) as snap:
        assert snap.n_segments == full.segments > 0
    # Fingerprints only again: nothing changed, so the segments stay.
    again = index_library(media, snapshot, jobs=1)
    assert again.seasons_unchanged == [SEASON]
    with Snapshot.open(snapshot) as snap:
        assert snap.n_segments == full.segments


def media_ext(media: Path) -> str:
    return next(media.rglob("*S01E02*")).suffix.lstrip(".")
