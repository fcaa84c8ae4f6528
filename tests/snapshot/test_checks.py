"""A shard's checksums are checked before its data is used: a damaged shard is refused with an
error naming it and the section, and the other shards go on answering."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS, fingerprint, match_samples
from citywok_pipeline.snapshot import CorruptShardError, Snapshot, SnapshotError, open_shard

from .test_shard import build


def flip_in_section(path: Path, name: str, where: float = 0.5) -> None:
    """Flip one bit inside the LMDB value ``name`` of a shard file (found by its bytes)."""
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        value = txn.get(name.encode())
    env.close()
    assert value is not None and len(value) >= 128, name
    at = min(int(len(value) * where), len(value) - 64)
    data = bytearray(path.read_bytes())
    start = data.find(value[at : at + 64])
    assert start >= 0 and data.find(value[at : at + 64], start + 1) < 0
    data[start + 7] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture
def two_seasons(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """Seasons a (3 episodes) and b (3 episodes); the audio of b's episodes."""
    build(tmp_path, season="a-s01", seeds=(0, 1, 2), duration=40.0, layout="flat")
    *_, audio_b, _ = build(tmp_path, season="b-s01", seeds=(3, 4, 5), duration=40.0)
    return tmp_path, audio_b


def clip(audio: np.ndarray, start_s: float = 10.0, seconds: float = 6.0) -> np.ndarray:
    sr = DEFAULT_PARAMS.sample_rate
    return audio[int(start_s * sr) : int((start_s + seconds) * sr)]


@pytest.mark.parametrize("section", ["packed", "keys"])
def test_a_damaged_posting_array_is_refused_at_first_use_and_the_other_shard_answers(
    two_seasons: tuple[Path, list[np.ndarray]], section: str
) -> None:
    snapshot, audio_b = two_seasons
    flip_in_section(snapshot / "a-s01.lmdb", section)
    with Snapshot.open(snapshot) as snap:
        result = match_samples(clip(audio_b[1]), snap)
        assert result.matches[0].episode_id == "b-s01e02"
        refused = snap.refused()
    assert list(refused) == ["a-s01.lmdb"]
    assert f"checksum mismatch in {section!r}" in refused["a-s01.lmdb"]
    assert str(snapshot / "a-s01.lmdb") in refused["a-s01.lmdb"]


def test_a_damaged_episode_table_is_refused_at_open(
    two_seasons: tuple[Path, list[np.ndarray]],
) -> None:
    snapshot, audio_b = two_seasons
    flip_in_section(snapshot / "a-s01.lmdb", "episodes", where=0.2)
    with pytest.raises(CorruptShardError, match=r"a-s01\.lmdb: checksum mismatch in 'episodes'"):
        open_shard(snapshot / "a-s01.lmdb")
    with Snapshot.open(snapshot) as snap:
        assert [s.season for s in snap.shards] == ["b-s01"]
        assert "checksum mismatch in 'episodes'" in snap.refused()["a-s01.lmdb"]
        assert match_samples(clip(audio_b[0]), snap).matches[0].episode_id == "b-s01e01"


def test_with_background_checks_a_damaged_shard_is_found_and_then_gives_no_hits(
    two_seasons: tuple[Path, list[np.ndarray]],
) -> None:
    snapshot, audio_b = two_seasons
    flip_in_section(snapshot / "b-s01.lmdb", "packed")
    with Snapshot.open(snapshot, checks="background") as snap:
        refused = snap.wait_for_checks(timeout_s=60)
        assert not snap.checks_pending
        assert list(refused) == ["b-s01.lmdb"]
        assert "checksum mismatch in 'packed'" in refused["b-s01.lmdb"]
        keys = fingerprint(clip(audio_b[1]), params=DEFAULT_PARAMS).keys
        _, episodes, _ = snap.lookup(np.sort(keys))
        assert {snap.episodes[e].season for e in episodes.tolist()} <= {"a-s01"}


def test_background_checks_of_a_sound_snapshot_refuse_nothing(
    two_seasons: tuple[Path, list[np.ndarray]],
) -> None:
    snapshot, audio_b = two_seasons
    with Snapshot.open(snapshot, checks="background") as snap:
        assert snap.wait_for_checks(timeout_s=60) == {}
        assert all(not s.unchecked() for s in snap.shards)
        assert match_samples(clip(audio_b[2]), snap).matches[0].episode_id == "b-s01e03"


def test_closing_a_snapshot_while_it_is_being_checked_is_safe(
    two_seasons: tuple[Path, list[np.ndarray]],
) -> None:
    snapshot, _ = two_seasons
    for _ in range(20):
        Snapshot.open(snapshot, checks="background").close()


def test_a_snapshot_whose_every_shard_is_damaged_cannot_be_opened(
    two_seasons: tuple[Path, list[np.ndarray]],
) -> None:
    snapshot, _ = two_seasons
    for name in ("a-s01.lmdb", "b-s01.lmdb"):
        flip_in_section(snapshot / name, "episodes", where=0.2)
    with pytest.raises(SnapshotError, match=r"every shard is refused: .*a-s01\.lmdb.*b-s01\.lmdb"):
        Snapshot.open(snapshot)
