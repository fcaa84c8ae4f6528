"""A clip identified by its words: `citywok match --by-words` and `POST /match` fall back on
what is said when the fingerprint finds nothing (a dub: the episode's lines said by other
voices over other music), keep the audio's answer when it matches, say "no speech in the clip"
for music alone and answer nothing for speech the library never heard."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from citywok_pipeline.demo.library import (
    SAMPLE_RATE,
    encode,
    generate_library,
    render_episode_samples,
    render_remixed_episode_samples,
    render_unseen_samples,
)
from citywok_pipeline.indexer import TranscriptSide, index_library
from citywok_pipeline.snapshot import Snapshot
from citywok_pipeline.transcripts.identify import NO_SPEECH, WordsIdentifier
from tests.cli import conftest as cli_fixtures
from tests.cli.conftest import Citywok
from tests.serving import conftest as serving_fixtures
from tests.serving.conftest import ServerFactory

# The real console script and a real server, as the CLI and serving tests run them.
citywok_script = cli_fixtures.citywok_script
citywok = cli_fixtures.citywok
start_server = serving_fixtures.start_server

pytestmark = pytest.mark.slow

EPISODE = dict(show_index=0, season=1, duration_s=30.0, intro_s=4.0, seed=21)
SEASON = "harbour-lights-s01"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 30 s episodes, fingerprinted, transcribed and embedded."""
    root = tmp_path_factory.mktemp("identify")
    generate_library(root / "media", shows=1, seasons=1, episodes=2, **_library_args())
    report = index_library(
        root / "media", root / "snap", transcripts=TranscriptSide.default(), jobs=1
    )
    assert not report.failures and report.segments > 6
    return root / "snap"


def _library_args() -> dict[str, float | int]:
    return {k: v for k, v in EPISODE.items() if k in ("duration_s", "intro_s", "seed")}


def clip(tmp_path: Path, samples: np.ndarray, start_s: float, length_s: float, name: str) -> Path:
    a = round(start_s * SAMPLE_RATE)
    return encode(
        samples[a : a + round(length_s * SAMPLE_RATE)], tmp_path / name, sample_rate=SAMPLE_RATE
    )


def dubbed(episode: int) -> np.ndarray:
    """The episode's lines said by other voices, each from the same second, over other music."""
    return render_remixed_episode_samples(**EPISODE, episode=episode, remix=1, revoice=1)


# Where a dubbed 10 s window starts, in both episodes. What is said varies from window to window
# (the benchmark's 83% top-1 for dubbed 10 s clips is over many): the tests ask for most of
# them, found at their second, and never a wrong episode or second. One window would hang on the model's
# output, which differs between CPUs (CTranslate2's int8 kernels by instruction set).
WINDOWS_S = (4.0, 8.0, 12.0, 16.0, 20.0)


def _right(match: dict, episode: int, start_s: float) -> bool:
    return match["episode_id"] == f"{SEASON}e{episode:02d}" and match["offset_s"] == (
        pytest.approx(start_s, abs=2.0)
    )


def test_dubbed_clips_are_found_by_their_words_at_their_second(
    snapshot: Path, citywok: Citywok, tmp_path: Path
) -> None:
    windows = [(episode, start) for episode in (1, 2) for start in WINDOWS_S]
    paths = [
        clip(tmp_path, dubbed(episode), start, 10.0, f"dub-{episode}-{start:g}.wav")
        for episode, start in windows
    ]
    # The fingerprint finds nothing in them ...
    audio = citywok("match", snapshot, *paths, "--json")
    assert audio.returncode == 0, audio
    assert [(line["method"], line["matches"]) for line in audio.json_lines()] == [
        ("audio", [])
    ] * len(paths)
    # ... what is said finds the episode and the second.
    words = citywok("match", snapshot, *paths, "--json", "--by-words")
    assert words.returncode == 0, words
    lines = words.json_lines()
    assert [line["query"] for line in lines] == [str(p) for p in paths]
    found = []
    for (episode, start), line in zip(windows, lines, strict=True):
        assert line["method"] == "words" and not line["ambiguous"], line
        for match in line["matches"]:
            assert _right(match, episode, start), (episode, start, line)
            assert match["method"] == "words" and match["confidence"] >= 0.9
            assert (
                match["source"]
                == f"Harbour Lights/Season 01/Harbour Lights - S01E{episode:02d}.mp3"
            )
        found += [(episode, start)] if line["matches"] else []
    assert len(found) >= 0.6 * len(windows), found


def test_a_clip_the_audio_matches_keeps_the_audio_answer(
    snapshot: Path, citywok: Citywok, tmp_path: Path
) -> None:
    path = clip(tmp_path, render_episode_samples(**EPISODE, episode=1), 9.0, 5.0, "orig.wav")
    result = citywok("match", snapshot, path, "--json", "--by-words")
    assert result.returncode == 0, result
    [line] = result.json_lines()
    assert line["method"] == "audio"
    assert line["matches"][0]["episode_id"] == f"{SEASON}e01"
    assert line["matches"][0]["offset_s"] == pytest.approx(9.0, abs=0.1)


def test_a_clip_without_speech_says_so(snapshot: Path, citywok: Citywok, tmp_path: Path) -> None:
    # The dub's intro: other music, nothing said, not in the fingerprint index.
    path = clip(tmp_path, dubbed(1), 0.0, 4.0, "music.wav")
    result = citywok("match", snapshot, path, "--json", "--by-words")
    assert result.returncode == 4, result
    [line] = result.json_lines()
    assert (line["method"], line["matches"], line["note"]) == ("words", [], NO_SPEECH)


def test_speech_the_library_never_heard_is_not_in_it(snapshot: Path) -> None:
    with Snapshot.open(snapshot) as snap:
        words = WordsIdentifier(snap)
        for seed in range(2):
            result = words.identify(render_unseen_samples(duration_s=10.0, seed=seed))
            assert result.method == "words" and result.note == ""
            assert result.matches == (), result


def test_post_match_falls_back_on_the_words(
    snapshot: Path, start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(str(snapshot), "--poll", "0")
    dubs = {
        start: clip(tmp_path, dubbed(1), start, 10.0, f"dub-{start:g}.wav") for start in WINDOWS_S
    }
    with httpx.Client(base_url=server.url, timeout=120) as http:
        answers = {
            start: http.post("/match", files={"file": ("dub.wav", dub.read_bytes())}).json()
            for start, dub in dubs.items()
        }
        original = clip(tmp_path, render_episode_samples(**EPISODE, episode=2), 8.0, 5.0, "o.wav")
        answer = http.post("/match", files={"file": ("o.wav", original.read_bytes())}).json()
        assert answer["method"] == "audio" and answer["matches"][0]["episode_id"] == f"{SEASON}e02"
    assert all(a["method"] == "words" for a in answers.values()), answers
    assert all(_right(m, 1, start) for start, a in answers.items() for m in a["matches"]), answers
    assert sum(bool(a["matches"]) for a in answers.values()) >= 0.6 * len(answers), answers
    dub = dubs[WINDOWS_S[0]]
    # An operator who will not spend seconds of CPU on unmatched uploads turns it off.
    off = start_server(str(snapshot), "--poll", "0", "--no-match-by-words")
    with httpx.Client(base_url=off.url, timeout=120) as http:
        answer = http.post("/match", files={"file": ("dub.wav", dub.read_bytes())}).json()
    assert (answer["method"], answer["matches"]) == ("audio", []), answer
