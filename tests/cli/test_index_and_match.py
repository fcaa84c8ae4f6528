"""End to end: `citywok index` a generated TV library, then `citywok match` degraded clips.

Everything here is real: espeak-ng and ffmpeg render the episodes, the installed console
script runs in a subprocess, and the snapshot is LMDB on disk.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.demo.degrade import DEGRADATIONS, cut
from citywok_pipeline.demo.library import (
    SAMPLE_RATE,
    GeneratedEpisode,
    encode,
    generate_library,
    generate_unseen_audio,
    render_episode_samples,
)
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.library import MediaFile, scan_media

from .conftest import Citywok, CliResult

pytestmark = pytest.mark.slow

SHOWS, SEASONS, EPISODES = 2, 1, 3
DURATION_S, INTRO_S, CLIP_S = 30.0, 6.0, 5.0
SEED = 0
FORMATS = ("mp3", "mkv", "m4a", "flac", "opus", "wav")
DEGRADED = ("clean", "noise_10db", "mp3_32k", "telephone", "speed_+1pct")
# Clips are stored the way people send them: in assorted containers.
CLIP_FORMATS = ("wav", "mp3", "m4a", "flac", "opus")
INTRO_CLIP_START_S, INTRO_CLIP_S = 1.0, 4.0
OFFSET_TOLERANCE_S = 1.0
# The `match --json` contract (DESIGN.md): each match has at least these fields.
CONTRACT_MATCH_KEYS = {"episode_id", "source", "season", "offset_s", "score", "confidence"}


@dataclass(frozen=True)
class Library:
    work: Path
    media: Path
    snapshot: Path
    episodes: list[GeneratedEpisode]
    index: CliResult

    def media_file(self, path: Path) -> MediaFile:
        """How the scanner names ``path``: episode id, season id, source relative to the root."""
        by_path = {mf.path.resolve(): mf for mf in scan_media(self.media).files}
        return by_path[path.resolve()]


@dataclass(frozen=True)
class Clip:
    arg: str  # as given to `citywok match`, relative to the library's work dir
    episode: GeneratedEpisode | None
    start_s: float


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, citywok: Citywok) -> Library:
    work = tmp_path_factory.mktemp("e2e")
    media, snapshot = work / "media", work / "snapshot"
    episodes = generate_library(
        media,
        shows=SHOWS,
        seasons=SEASONS,
        episodes=EPISODES,
        duration_s=DURATION_S,
        intro_s=INTRO_S,
        seed=SEED,
        formats=FORMATS,
    )
    return Library(work, media, snapshot, episodes, citywok("index", media, "--snapshot", snapshot))


@pytest.fixture(scope="module")
def clips(library: Library) -> dict[str, Clip]:
    """Degraded clips of the episodes' unique parts, one intro clip and one of unseen audio."""
    rng = np.random.default_rng(2024)
    folder = library.work / "clips"
    out: dict[str, Clip] = {}
    for i, name in enumerate(DEGRADED):
        episode = library.episodes[i % len(library.episodes)]
        samples = decode(episode.path, sample_rate=SAMPLE_RATE)
        start = float(rng.uniform(INTRO_S + 0.5, DURATION_S - CLIP_S - 0.5))
        clip = cut(samples, SAMPLE_RATE, start_s=start, duration_s=CLIP_S)
        path = folder / f"{i:02d}-{name}.{CLIP_FORMATS[i % len(CLIP_FORMATS)]}"
        encode(DEGRADATIONS[name](clip, SAMPLE_RATE, rng), path, sample_rate=SAMPLE_RATE)
        out[name] = Clip(path.relative_to(library.work).as_posix(), episode, start)

    episode = library.episodes[1]
    samples = decode(episode.path, sample_rate=SAMPLE_RATE)
    intro = cut(samples, SAMPLE_RATE, start_s=INTRO_CLIP_START_S, duration_s=INTRO_CLIP_S)
    encode(intro, folder / "intro.wav", sample_rate=SAMPLE_RATE)
    out["intro"] = Clip("clips/intro.wav", episode, INTRO_CLIP_START_S)

    generate_unseen_audio(folder / "unseen.flac", duration_s=6.0, seed=3)
    out["unseen"] = Clip("clips/unseen.flac", None, 0.0)
    return out


@pytest.fixture(scope="module")
def answers(
    library: Library, clips: dict[str, Clip], citywok: Citywok
) -> tuple[CliResult, dict[str, dict]]:
    """Every clip matched in one `citywok match SNAPSHOT CLIP... --json` call."""
    result = citywok(
        "match", "snapshot", *(c.arg for c in clips.values()), "--json", cwd=library.work
    )
    lines = result.json_lines()
    return result, {name: line for name, line in zip(clips, lines, strict=False)}


def shard_state(snapshot: Path) -> dict[str, tuple[str, int]]:
    """Each shard file's content hash and mtime, to tell rewritten shards from untouched ones."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(snapshot.glob("*.lmdb"))
    }


def without(state: dict[str, tuple[str, int]], name: str) -> dict[str, tuple[str, int]]:
    return {k: v for k, v in state.items() if k != name}


def info_json(citywok: Citywok, snapshot: Path) -> dict:
    result = citywok("info", snapshot, "--json")
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout)


def episodes_per_season(citywok: Citywok, snapshot: Path) -> dict[str, int]:
    return {s["season"]: s["episodes"] for s in info_json(citywok, snapshot)["shards"]}


def clean_clip(episode_path: Path, start_s: float, out: Path) -> Path:
    samples = decode(episode_path, sample_rate=SAMPLE_RATE)
    return encode(
        cut(samples, SAMPLE_RATE, start_s=start_s, duration_s=CLIP_S), out, sample_rate=SAMPLE_RATE
    )


def copy_library(library: Library, root: Path) -> Library:
    """A private copy of the module's media tree (mtimes kept), with a snapshot dir of its own."""
    media = root / "media"
    shutil.copytree(library.media, media)
    episodes = [
        replace(e, path=media / e.path.relative_to(library.media)) for e in library.episodes
    ]
    return Library(root, media, root / "snapshot", episodes, library.index)


def fresh_index(library: Library, root: Path, citywok: Citywok) -> Library:
    """A private copy of the module's library, indexed into its own snapshot."""
    own = copy_library(library, root)
    result = citywok("index", own.media, "--snapshot", own.snapshot, "--quiet")
    assert result.returncode == 0, str(result)
    return own


# ------------------------------------------------------------------------------------------------
# Indexing


def test_index_exits_0_and_reports_progress_and_a_summary_on_stderr(library: Library) -> None:
    result = library.index
    assert result.returncode == 0, str(result)
    assert result.stdout == ""
    files, seasons = SHOWS * SEASONS * EPISODES, SHOWS * SEASONS
    assert "fingerprinting" in result.stderr and f"{files}/{files}" in result.stderr
    assert f"{seasons} season(s) built" in result.stderr
    assert f"{files} file(s) fingerprinted" in result.stderr
    assert "0 failed" in result.stderr


def test_index_writes_one_lmdb_shard_per_season(library: Library) -> None:
    seasons = scan_media(library.media).seasons
    assert len(seasons) == SHOWS * SEASONS
    assert sorted(
        p.name for p in library.snapshot.iterdir() if not p.name.startswith(".")
    ) == sorted(f"{season}.lmdb" for season in seasons)


def test_the_indexed_snapshot_passes_verify(library: Library, citywok: Citywok) -> None:
    result = citywok("verify", library.snapshot)
    assert result.returncode == 0, str(result)
    assert result.stdout.strip().endswith("ok")


def test_info_lists_every_season_with_its_episodes(library: Library, citywok: Citywok) -> None:
    result = citywok("info", library.snapshot)
    assert result.returncode == 0, str(result)
    assert f"{SHOWS * SEASONS} shard(s), {SHOWS * SEASONS * EPISODES} episode(s)" in result.stdout
    for season in scan_media(library.media).seasons:
        assert re.search(
            rf"^\s+{re.escape(season)}\s+{EPISODES} episode\(s\)", result.stdout, re.M
        ), season


def test_info_json_describes_every_shard_and_the_params(library: Library, citywok: Citywok) -> None:
    data = info_json(citywok, library.snapshot)
    assert data["episodes"] == SHOWS * SEASONS * EPISODES
    assert episodes_per_season(citywok, library.snapshot) == dict.fromkeys(
        scan_media(library.media).seasons, EPISODES
    )
    assert all(s["postings"] > 0 and s["bytes"] > 0 for s in data["shards"])
    assert isinstance(data["params"]["version"], int)


# ------------------------------------------------------------------------------------------------
# Matching


def test_match_prints_one_json_line_per_clip_in_the_order_given(
    answers: tuple[CliResult, dict[str, dict]], clips: dict[str, Clip]
) -> None:
    result, _ = answers
    assert result.returncode == 0, str(result)
    lines = result.json_lines()
    assert [line["query"] for line in lines] == [c.arg for c in clips.values()]
    for line in lines:
        assert set(line) == {"query", "ambiguous", "method", "matches"}
        assert line["method"] == "audio"
        for m in line["matches"]:
            assert set(m) >= CONTRACT_MATCH_KEYS, m
            assert m["method"] == "audio"


@pytest.mark.parametrize("degradation", DEGRADED)
def test_degraded_clip_matches_its_episode_at_the_right_second(
    degradation: str,
    answers: tuple[CliResult, dict[str, dict]],
    clips: dict[str, Clip],
    library: Library,
) -> None:
    clip = clips[degradation]
    assert clip.episode is not None
    want = library.media_file(clip.episode.path)
    answer = answers[1][degradation]
    assert answer["ambiguous"] is False, answer
    assert answer["matches"], answer
    best = answer["matches"][0]
    assert best["episode_id"] == want.episode_id, answer
    assert abs(best["offset_s"] - clip.start_s) <= OFFSET_TOLERANCE_S, (clip.start_s, answer)
    assert best["source"] == want.source
    assert best["season"] == want.season_id
    assert 0 < best["confidence"] <= 1
    assert isinstance(best["score"], int) and best["score"] > 0


def test_clip_inside_the_shared_intro_is_ambiguous_between_that_shows_episodes(
    answers: tuple[CliResult, dict[str, dict]], clips: dict[str, Clip], library: Library
) -> None:
    clip = clips["intro"]
    assert clip.episode is not None
    show_episodes = {
        library.media_file(e.path).episode_id
        for e in library.episodes
        if e.show == clip.episode.show
    }
    answer = answers[1]["intro"]
    assert answer["ambiguous"] is True, answer
    assert {m["episode_id"] for m in answer["matches"]} == show_episodes
    assert len(answer["matches"]) == len(show_episodes)
    for m in answer["matches"]:
        assert abs(m["offset_s"] - INTRO_CLIP_START_S) <= OFFSET_TOLERANCE_S, answer


def test_unseen_audio_matches_nothing(answers: tuple[CliResult, dict[str, dict]]) -> None:
    answer = answers[1]["unseen"]
    assert answer == {
        "query": "clips/unseen.flac",
        "ambiguous": False,
        "method": "audio",
        "matches": [],
    }


# ------------------------------------------------------------------------------------------------
# Incremental re-indexing


def test_reindexing_an_unchanged_library_processes_nothing_and_leaves_shards_untouched(
    library: Library, tmp_path: Path, citywok: Citywok
) -> None:
    own = fresh_index(library, tmp_path, citywok)
    before = shard_state(own.snapshot)

    again = citywok("index", own.media, "--snapshot", own.snapshot)

    assert again.returncode == 0, str(again)
    assert "0 season(s) built, 2 unchanged, 0 removed" in again.stderr
    assert "0 file(s) fingerprinted" in again.stderr
    assert shard_state(own.snapshot) == before


def test_adding_an_episode_rebuilds_only_its_season_and_makes_it_matchable(
    library: Library, tmp_path: Path, citywok: Citywok
) -> None:
    own = fresh_index(library, tmp_path, citywok)
    first = own.episodes[0]
    new_path = first.path.with_name(f"{first.show} - S01E04.mp3")
    samples = render_episode_samples(
        show_index=0, season=1, episode=4, duration_s=DURATION_S, intro_s=INTRO_S, seed=SEED
    )
    encode(samples, new_path, sample_rate=SAMPLE_RATE)
    new = own.media_file(new_path)
    before = shard_state(own.snapshot)
    changed = f"{new.season_id}.lmdb"

    result = citywok("index", own.media, "--snapshot", own.snapshot, "--quiet")

    assert result.returncode == 0, str(result)
    assert "1 season(s) built, 1 unchanged" in result.stderr
    assert f"1 file(s) fingerprinted, {EPISODES} reused" in result.stderr
    after = shard_state(own.snapshot)
    assert after.keys() == before.keys()
    assert after[changed][0] != before[changed][0]
    assert without(after, changed) == without(before, changed)
    assert episodes_per_season(citywok, own.snapshot)[new.season_id] == EPISODES + 1

    clip = cut(samples, SAMPLE_RATE, start_s=17.0, duration_s=CLIP_S)
    encode(clip, tmp_path / "new.wav", sample_rate=SAMPLE_RATE)
    (answer,) = citywok("match", own.snapshot, tmp_path / "new.wav", "--json").json_lines()
    assert answer["matches"], answer
    assert answer["matches"][0]["episode_id"] == new.episode_id
    assert answer["matches"][0]["source"] == new.source
    assert abs(answer["matches"][0]["offset_s"] - 17.0) <= OFFSET_TOLERANCE_S


def test_removing_an_episode_removes_it_from_its_seasons_shard(
    library: Library, tmp_path: Path, citywok: Citywok
) -> None:
    own = fresh_index(library, tmp_path, citywok)
    gone = own.episodes[1]
    gone_file = own.media_file(gone.path)
    clip = clean_clip(gone.path, 20.0, tmp_path / "gone.wav")
    (before,) = citywok("match", own.snapshot, clip, "--json").json_lines()
    assert before["matches"][0]["episode_id"] == gone_file.episode_id, before
    before_state = shard_state(own.snapshot)
    changed = f"{gone_file.season_id}.lmdb"

    gone.path.unlink()
    result = citywok("index", own.media, "--snapshot", own.snapshot, "--quiet")

    assert result.returncode == 0, str(result)
    assert "1 season(s) built, 1 unchanged" in result.stderr
    verify = citywok("verify", own.snapshot)
    assert verify.returncode == 0, str(verify)
    assert episodes_per_season(citywok, own.snapshot)[gone_file.season_id] == EPISODES - 1
    assert without(shard_state(own.snapshot), changed) == without(before_state, changed)
    (after,) = citywok("match", own.snapshot, clip, "--json").json_lines()
    assert after["matches"] == [], after


# ------------------------------------------------------------------------------------------------
# A bad file in the library


def _text_as_mp3(library: Library) -> tuple[Path, str]:
    first = library.episodes[0]
    path = first.path.with_name(f"{first.show} - S01E09.mp3")
    path.write_text("<html><body><h1>404 Not Found</h1></body></html>\n")
    return path, f"{first.show}/{path.parent.name}/{path.name}"


def _truncated_flac(library: Library) -> tuple[Path, str]:
    (episode,) = (e for e in library.episodes if e.path.suffix == ".flac")
    data = episode.path.read_bytes()
    episode.path.write_bytes(data[:2000])  # the stream header and a sliver of the first frame
    return episode.path, episode.path.relative_to(library.media).as_posix()


BAD_FILES = {"text-named-mp3": _text_as_mp3, "truncated-flac": _truncated_flac}


@pytest.fixture(params=sorted(BAD_FILES))
def library_with_bad_file(
    request: pytest.FixtureRequest, library: Library, tmp_path: Path
) -> tuple[Library, Path, str]:
    """A private copy of the library with one bad file in it (not yet indexed)."""
    own = copy_library(library, tmp_path)
    bad, source = BAD_FILES[request.param](own)
    return own, bad, source


def _assert_reports(result: CliResult, source: str) -> None:
    lines = [line for line in result.error_lines() if source in line]
    assert lines, str(result)
    assert re.search(r": (not an audio file|truncated or corrupt)", lines[0]), lines[0]


def test_index_reports_a_bad_file_exits_2_and_still_indexes_the_rest(
    library_with_bad_file: tuple[Library, Path, str],
    clips: dict[str, Clip],
    library: Library,
    citywok: Citywok,
) -> None:
    own, bad, source = library_with_bad_file

    result = citywok("index", own.media, "--snapshot", own.snapshot, "--quiet")

    assert result.returncode == 2, str(result)
    _assert_reports(result, source)
    assert "Traceback" not in result.stderr
    assert citywok("verify", own.snapshot).returncode == 0
    seasons = scan_media(own.media).seasons
    bad_season = next(s for s, files in seasons.items() if any(f.path == bad for f in files))
    want = {s: len(files) - (s == bad_season) for s, files in seasons.items()}
    assert episodes_per_season(citywok, own.snapshot) == want

    good = [clips[name] for name in DEGRADED if clips[name].episode.path.name != bad.name]
    args = [c.arg for c in good]
    lines = citywok("match", own.snapshot, *args, "--json", cwd=library.work).json_lines()
    best = [line["matches"][0]["episode_id"] if line["matches"] else None for line in lines]
    assert best == [library.media_file(c.episode.path).episode_id for c in good]


def test_reindexing_with_a_bad_file_reports_it_again_without_redoing_work(
    library_with_bad_file: tuple[Library, Path, str], citywok: Citywok
) -> None:
    own, _, source = library_with_bad_file
    first = citywok("index", own.media, "--snapshot", own.snapshot, "--quiet")
    assert first.returncode == 2, str(first)
    before = shard_state(own.snapshot)

    again = citywok("index", own.media, "--snapshot", own.snapshot, "--quiet")

    assert again.returncode == 2, str(again)
    assert "Traceback" not in again.stderr
    _assert_reports(again, source)
    assert "0 file(s) fingerprinted" in again.stderr
    assert shard_state(own.snapshot) == before
