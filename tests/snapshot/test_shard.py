import os
import subprocess
import sys

import numpy as np
import pytest

from citywok_pipeline.fingerprint import (
    DEFAULT_PARAMS,
    Episode,
    FingerprintParams,
    fingerprint,
    match_samples,
)
from citywok_pipeline.snapshot import (
    ParamsMismatchError,
    Snapshot,
    SnapshotError,
    open_shard,
    shard_path,
    verify_shard,
    verify_snapshot,
    write_shard,
)
from tests.conftest import tone_music

SR = DEFAULT_PARAMS.sample_rate


def build(
    tmp_path,
    season="show-s01",
    seeds=(0, 1, 2),
    duration=20.0,
    params=DEFAULT_PARAMS,
    layout="auto",
):
    audio = [tone_music(duration, s) for s in seeds]
    episodes = [
        Episode(
            episode_id=f"{season}e{i + 1:02d}",
            season=season,
            show="Show",
            source=f"Show/S01/e{i + 1}.mp3",
            duration_s=duration,
            sha256="0" * 64,
        )
        for i in range(len(seeds))
    ]
    hashes = [fingerprint(x, params=params) for x in audio]
    path = shard_path(tmp_path, season)
    info = write_shard(
        path, season=season, episodes=episodes, hashes=hashes, params=params, layout=layout
    )
    return path, info, audio, hashes


@pytest.mark.parametrize("layout", ["auto", "flat", "csr", "bitmap"])
def test_a_built_shard_opens_verifies_and_round_trips_its_postings(tmp_path, layout):
    path, info, _, hashes = build(tmp_path, layout=layout)
    assert info.n_episodes == 3 and info.n_postings > 100
    assert verify_shard(path) == []
    shard = open_shard(path)
    try:
        assert shard.meta["layout"] == shard.postings.layout
        if layout != "auto":
            assert shard.postings.layout == layout
        assert [e.n_hashes for e in shard.episodes] == [
            len(np.unique(np.stack([h.keys, np.rint(h.times)]), axis=1)[0]) for h in hashes
        ]
        for i, h in enumerate(hashes):
            back = shard.postings.episode_hashes(i)
            want = set(zip(h.keys.tolist(), np.rint(h.times).astype(int).tolist(), strict=True))
            assert (
                set(zip(back.keys.tolist(), back.times.astype(int).tolist(), strict=True)) == want
            )
        assert shard.meta["params"] == DEFAULT_PARAMS.to_dict()
        assert shard.meta["format_version"] == 1
    finally:
        shard.close()


@pytest.mark.parametrize("layouts", [("auto", "auto"), ("bitmap", "csr")])
def test_a_snapshot_searches_all_its_shards(tmp_path, layouts):
    build(tmp_path, season="a-s01", seeds=(0, 1), layout=layouts[0])
    _, _, audio_b, _ = build(tmp_path, season="b-s02", seeds=(5, 6), layout=layouts[1])
    with Snapshot.open(tmp_path) as snap:
        assert [e.episode_id for e in snap.episodes] == [
            "a-s01e01",
            "a-s01e02",
            "b-s02e01",
            "b-s02e02",
        ]
        clip = audio_b[1][int(7.0 * SR) : int(12.0 * SR)]
        result = match_samples(clip, snap)
        assert result.matches[0].episode_id == "b-s02e02"
        assert result.matches[0].offset_s == pytest.approx(7.0, abs=0.1)
        assert snap.info()["episodes"] == 4


def test_a_shard_built_with_other_params_is_refused(tmp_path):
    other = FingerprintParams(peaks_per_second=20.0)
    path, *_ = build(tmp_path, params=other)
    with pytest.raises(ParamsMismatchError, match="params"):
        open_shard(path, params=DEFAULT_PARAMS)
    build(tmp_path, season="z-s01", seeds=(9,))  # default params beside the other ones
    with pytest.raises(ParamsMismatchError):
        Snapshot.open(tmp_path)
    assert any("params" in p for p in verify_snapshot(tmp_path))


def test_a_truncated_shard_fails_verify(tmp_path):
    path, *_ = build(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = verify_shard(path)
    assert problems and str(path) in problems[0]


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_bit_flip_in_the_posting_data_fails_verify(tmp_path, where):
    path, *_ = build(tmp_path, seeds=(0, 1, 2, 3), duration=40.0)
    shard = open_shard(path)
    keys_len = shard.postings.keys.nbytes
    shard.close()
    data = bytearray(path.read_bytes())
    # Find the key array in the file and flip one bit inside it.
    shard = open_shard(path)
    start = data.find(bytes(shard.postings.keys[:64]))
    shard.close()
    assert start >= 0
    pos = start + int(keys_len * where)
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))
    problems = verify_shard(path)
    assert any("checksum" in p or "sorted" in p for p in problems), problems


def test_a_bit_flip_in_the_key_bitmap_fails_verify(tmp_path):
    path, *_ = build(tmp_path, layout="bitmap")
    shard = open_shard(path)
    bitmap = np.array(shard.postings.bitmap)
    shard.close()
    word = int(np.flatnonzero(bitmap)[0])
    data = bytearray(path.read_bytes())
    start = data.find(bitmap[word : word + 4].tobytes())
    assert start >= 0
    data[start] ^= 0x01
    path.write_bytes(bytes(data))
    problems = verify_shard(path)
    assert any("checksum mismatch in 'bitmap'" in p for p in problems), problems


def test_an_empty_or_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SnapshotError, match="no shards"):
        Snapshot.open(tmp_path)
    with pytest.raises(SnapshotError, match="no such snapshot directory"):
        Snapshot.open(tmp_path / "nope")
    (tmp_path / "junk.lmdb").write_bytes(b"not lmdb at all" * 100)
    with pytest.raises(SnapshotError, match=r"junk\.lmdb"):
        Snapshot.open(tmp_path)


def test_a_crash_mid_build_leaves_the_old_shard_intact(tmp_path):
    path, *_ = build(tmp_path, seeds=(0,))
    before = path.read_bytes()
    # A child process starts writing a new version of the same shard and is killed mid-write.
    script = f"""
import os, numpy as np
import citywok_pipeline.snapshot.shard as shard_mod
from citywok_pipeline.fingerprint import DEFAULT_PARAMS, Episode, Hashes
real_put = None
import lmdb
class Dying:
    def __init__(self, txn): self.txn = txn
def die(*a, **k):
    os._exit(9)
shard_mod.os.replace = die
eps = [Episode(episode_id='x', season='show-s01', duration_s=1.0)]
h = [Hashes(np.arange(1000, dtype=np.uint32), np.zeros(1000, np.float32))]
shard_mod.write_shard({str(path)!r}, season='show-s01', episodes=eps, hashes=h, params=DEFAULT_PARAMS)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), check=False)
    assert proc.returncode == 9
    assert path.read_bytes() == before
    assert verify_shard(path) == []
    with Snapshot.open(tmp_path) as snap:  # leftover temporary files are not shards
        assert [e.episode_id for e in snap.episodes] == ["show-s01e01"]


def test_opening_is_lazy_and_fast(tmp_path):
    import time

    path, *_ = build(tmp_path, seeds=tuple(range(6)), duration=60.0)
    t0 = time.perf_counter()
    shard = open_shard(path)
    elapsed = time.perf_counter() - t0
    shard.close()
    assert elapsed < 0.5


def test_the_same_inputs_give_the_same_shard_bytes(tmp_path):
    _, _, _, hashes = build(tmp_path / "first", seeds=(0, 1))
    written = []
    for name in ("a", "b", "c"):
        path = shard_path(tmp_path / name, "show-s01")
        episodes = [
            Episode(episode_id=f"show-s01e{i:02d}", season="show-s01", show="Show",
                    source=f"e{i}.mp3", duration_s=20.0)
            for i in (1, 2)
        ]  # fmt: skip
        write_shard(path, season="show-s01", episodes=episodes, hashes=hashes,
                    params=DEFAULT_PARAMS, built_at="2026-01-02T03:04:05Z")  # fmt: skip
        written.append(path.read_bytes())
    assert written[0] == written[1] == written[2]
    assert open_shard(path).meta["built_at"] == "2026-01-02T03:04:05Z"
