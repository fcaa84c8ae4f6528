"""Bad input to the real `citywok` CLI: a clear message naming the file and the reason, and the
documented exit code (2 bad input, 1 a failed `verify`), never a traceback."""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
import pytest

from citywok_pipeline.demo.degrade import cut
from citywok_pipeline.demo.library import SAMPLE_RATE, encode, generate_library
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.library import scan_media

from .conftest import Citywok, CliResult

pytestmark = pytest.mark.slow

GOOD_CLIP_START_S = 8.0


@dataclass(frozen=True)
class Tiny:
    """One show, one season, two 15 s episodes, indexed; and a clean clip of episode 2."""

    work: Path
    media: Path
    snapshot: Path
    good_clip: Path
    good_episode_id: str


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, citywok: Citywok) -> Tiny:
    work = tmp_path_factory.mktemp("bad-input")
    media, snapshot = work / "media", work / "snapshot"
    episodes = generate_library(
        media,
        shows=1,
        seasons=1,
        episodes=2,
        duration_s=15.0,
        intro_s=3.0,
        seed=1,
        formats=("flac", "m4a"),
    )
    result = citywok("index", media, "--snapshot", snapshot, "--quiet")
    assert result.returncode == 0, str(result)
    target = episodes[1]
    samples = decode(target.path, sample_rate=SAMPLE_RATE)
    clip = encode(
        cut(samples, SAMPLE_RATE, start_s=GOOD_CLIP_START_S, duration_s=5.0),
        work / "good.wav",
        sample_rate=SAMPLE_RATE,
    )
    (mf,) = (f for f in scan_media(media).files if f.path.resolve() == target.path.resolve())
    return Tiny(work, media, snapshot, clip, mf.episode_id)


def assert_bad_input(result: CliResult, name: str, reason: str) -> None:
    """Exit 2, nothing on stdout, one error line that names ``name`` and matches ``reason``."""
    assert result.returncode == 2, str(result)
    assert result.stdout == "", str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = [line for line in result.error_lines() if name in line]
    assert len(lines) == 1, str(result)
    assert re.search(reason, lines[0]), lines[0]


def png_image(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=16x16",
         "-frames:v", "1", "-c:v", "png", "-f", "image2", str(path)],
        check=True,
    )  # fmt: skip
    return path


def silent_video(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:s=64x64:d=1",
         "-c:v", "mpeg4", str(path)],
        check=True,
    )  # fmt: skip
    return path


# ------------------------------------------------------------------------------------------------
# `citywok match` with clips that cannot be decoded


def test_a_missing_clip_is_reported_as_not_found(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    clip = tmp_path / "nowhere.mp3"
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), r"nowhere\.mp3: file not found")


def test_an_empty_clip_is_reported_as_empty(tiny: Tiny, tmp_path: Path, citywok: Citywok) -> None:
    clip = tmp_path / "empty.wav"
    clip.touch()
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), r"empty\.wav: file is empty \(0 bytes\)")


def test_a_text_file_is_reported_as_not_audio(tiny: Tiny, tmp_path: Path, citywok: Citywok) -> None:
    clip = tmp_path / "notes.txt"
    clip.write_text("Remember to record the last ten minutes of episode three.\n")
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), r"notes\.txt: not an audio file")


def test_a_text_file_saved_as_mp3_is_reported_as_not_audio(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    # What a failed download leaves behind: the server's error page under the media's name.
    clip = tmp_path / "episode.mp3"
    clip.write_text("<html><body><h1>404 Not Found</h1></body></html>\n")
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), r"episode\.mp3: not an audio file")


@pytest.mark.parametrize("name", ["cover.png", "cover.mp3"])
def test_an_image_is_reported_as_an_image_not_audio(
    name: str, tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    clip = tmp_path / name
    png_image(tmp_path / "cover.png").rename(clip)
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(
        result, str(clip), rf"{re.escape(name)}: not an audio file: it is an image \(png\)"
    )


def test_a_video_without_sound_is_reported_as_having_no_audio_stream(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    clip = silent_video(tmp_path / "silent.mkv")
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), r"silent\.mkv: has no audio stream, only video")


def test_an_audio_file_without_samples_is_reported_as_decoding_to_nothing(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    clip = tmp_path / "nothing.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(b"")
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), r"nothing\.wav: decoded to no audio samples")


@pytest.mark.parametrize("suffix", [".flac", ".m4a"])
def test_a_truncated_clip_is_reported_as_truncated_or_corrupt(
    suffix: str, tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    (episode,) = (p for p in tiny.media.rglob(f"*{suffix}"))
    data = episode.read_bytes()
    clip = tmp_path / f"cut{suffix}"
    # flac: the stream header and a sliver of the first frame; m4a: the audio without its
    # index (the moov atom is written last), as an interrupted copy leaves it.
    clip.write_bytes(data[:2000] if suffix == ".flac" else data[: len(data) // 2])
    result = citywok("match", tiny.snapshot, clip, "--json")
    assert_bad_input(result, str(clip), rf"cut{re.escape(suffix)}: truncated or corrupt")


def test_a_good_clip_beside_a_bad_one_still_gets_its_answer_and_exit_code_2(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    bad = tmp_path / "missing.wav"
    result = citywok("match", tiny.snapshot, bad, tiny.good_clip, "--json")
    assert result.returncode == 2, str(result)
    (answer,) = result.json_lines()
    assert answer["query"] == str(tiny.good_clip)
    assert answer["matches"][0]["episode_id"] == tiny.good_episode_id
    assert abs(answer["matches"][0]["offset_s"] - GOOD_CLIP_START_S) <= 1.0
    assert any(str(bad) in line and "file not found" in line for line in result.error_lines()), str(
        result
    )


def test_only_the_first_max_clip_seconds_of_a_clip_are_matched(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    # 4 s of episode 1, then 7 s of episode 2: the whole clip is mostly episode 2.
    first, second = sorted(scan_media(tiny.media).files, key=lambda f: f.episode_id)
    a = decode(first.path, sample_rate=SAMPLE_RATE)[5 * SAMPLE_RATE : 9 * SAMPLE_RATE]
    b = decode(second.path, sample_rate=SAMPLE_RATE)[5 * SAMPLE_RATE : 12 * SAMPLE_RATE]
    clip = encode(np.concatenate([a, b]), tmp_path / "spliced.wav", sample_rate=SAMPLE_RATE)
    whole = citywok("match", tiny.snapshot, clip, "--json")
    head = citywok("match", tiny.snapshot, clip, "--json", "--max-clip", "4")
    assert whole.returncode == 0 and head.returncode == 0, str(head)
    assert whole.json_lines()[0]["matches"][0]["episode_id"] == second.episode_id
    (best, *_) = head.json_lines()[0]["matches"]
    assert best["episode_id"] == first.episode_id and abs(best["offset_s"] - 5.0) <= 0.5


def test_a_huge_sparse_clip_ends_at_the_decode_timeout(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    # 50 GB of zeros named .mp3 (sparse: no disk used), which ffmpeg would scan to the end.
    clip = tmp_path / "huge.mp3"
    with open(clip, "wb") as f:
        f.truncate(50 << 30)
    result = citywok("match", tiny.snapshot, clip, "--json", "--decode-timeout", "2")
    assert_bad_input(result, str(clip), r"huge\.mp3: decoding timed out after 2 s")


def test_missing_ffmpeg_is_reported_as_not_installed(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = citywok("match", tiny.snapshot, tiny.good_clip, "--json", env={"PATH": str(empty_bin)})
    assert_bad_input(result, str(tiny.good_clip), r"ffmpeg is not installed")


# ------------------------------------------------------------------------------------------------
# Snapshots that are missing, empty or damaged


@pytest.mark.parametrize("command", ["match", "info", "verify"])
def test_a_missing_snapshot_directory_is_bad_input(
    command: str, tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    missing = tmp_path / "no-snapshot"
    args = [tiny.good_clip, "--json"] if command == "match" else []
    result = citywok(command, missing, *args)
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.stderr
    assert f"{missing}: no such snapshot directory" in result.stderr


@pytest.mark.parametrize("command", ["match", "info", "verify"])
def test_an_empty_snapshot_directory_is_bad_input(
    command: str, tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    empty = tmp_path / "empty-snapshot"
    empty.mkdir()
    args = [tiny.good_clip, "--json"] if command == "match" else []
    result = citywok(command, empty, *args)
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.stderr
    assert f"{empty}: no shards here" in result.stderr


def copy_of_snapshot(tiny: Tiny, tmp_path: Path) -> Path:
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny.snapshot, snapshot)
    return snapshot


@pytest.mark.parametrize("value", ["keys", "packed", "episodes"])
def test_verify_fails_naming_a_shard_with_one_flipped_bit(
    value: str, tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    snapshot = copy_of_snapshot(tiny, tmp_path)
    (shard,) = snapshot.glob("*.lmdb")
    env = lmdb.open(str(shard), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        stored = txn.get(value.encode())
    env.close()
    data = bytearray(shard.read_bytes())
    at = data.find(stored)
    assert at >= 0 and len(stored) > 0
    data[at + len(stored) // 2] ^= 0x04
    shard.write_bytes(bytes(data))

    result = citywok("verify", snapshot)

    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stderr
    assert str(shard) in result.stderr
    assert not result.stdout.strip().endswith("ok")


def test_verify_fails_naming_a_truncated_shard(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    snapshot = copy_of_snapshot(tiny, tmp_path)
    (shard,) = snapshot.glob("*.lmdb")
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size // 2)

    result = citywok("verify", snapshot)

    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stderr
    assert re.search(rf"{re.escape(str(shard))}: truncated", result.stderr), str(result)


def test_match_against_a_truncated_shard_is_bad_input_not_a_crash(
    tiny: Tiny, tmp_path: Path, citywok: Citywok
) -> None:
    snapshot = copy_of_snapshot(tiny, tmp_path)
    (shard,) = snapshot.glob("*.lmdb")
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size // 2)

    result = citywok("match", snapshot, tiny.good_clip, "--json")

    # A read through the map past the end of the file would be SIGBUS (returncode -7).
    assert result.returncode == 2, str(result)
    assert re.search(rf"{re.escape(str(shard))}: truncated", result.stderr), str(result)
