"""The synthetic episode library and the clip degradations behave as the benchmark assumes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import fftconvolve, welch

from citywok_pipeline.demo import degrade
from citywok_pipeline.demo.library import (
    SAMPLE_RATE,
    GeneratedEpisode,
    generate_library,
    generate_remixed_library,
    generate_unseen_audio,
    render_dialogue_samples,
    render_episode_samples,
    render_intro_samples,
    render_remixed_episode_samples,
)
from citywok_pipeline.fingerprint.params import ParameterError

SR = 16_000
DURATION_S = 14.0
INTRO_S = 4.0
FORMATS = ("mp3", "flac", "m4a", "mkv")

pytestmark = pytest.mark.timeout(120)


def decode(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz, decoded by ffmpeg independently of the project's own decoder."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
    cmd += ["-ac", "1", "-ar", str(SR), "-f", "f32le", "pipe:1"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<f4")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length signals at lag 0."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def best_lag(y: np.ndarray, x: np.ndarray, *, max_lag: int) -> int:
    """The shift of ``y`` against ``x`` (positive: ``y`` late) that correlates best."""
    core = x[max_lag : len(x) - max_lag].astype(np.float64)
    scores = fftconvolve(y.astype(np.float64), core[::-1], mode="valid")
    return int(np.argmax(scores[: 2 * max_lag + 1])) - max_lag


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    freqs, psd = welch(x, fs=SR, nperseg=1024)
    return float(psd[(freqs >= lo) & (freqs < hi)].sum())


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> list[GeneratedEpisode]:
    root = tmp_path_factory.mktemp("library")
    return generate_library(
        root, shows=2, episodes=2, duration_s=DURATION_S, intro_s=INTRO_S, formats=FORMATS
    )


@pytest.fixture(scope="module")
def decoded(library: list[GeneratedEpisode]) -> dict[tuple[str, int], np.ndarray]:
    return {(e.show, e.episode): decode(e.path) for e in library}


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """Eight seconds of dialogue over music from the unique part of an episode."""
    x = render_episode_samples(
        show_index=0, season=1, episode=1, duration_s=DURATION_S, intro_s=INTRO_S, seed=0
    )
    return degrade.cut(x, SR, start_s=5.0, duration_s=8.0)


# ----------------------------------------------------------------------------------------------
# Library


def test_library_is_laid_out_like_a_media_tree(library: list[GeneratedEpisode]) -> None:
    assert len(library) == 4
    assert [(e.show, e.season, e.episode) for e in library] == [
        ("Harbour Lights", 1, 1),
        ("Harbour Lights", 1, 2),
        ("The Night Kitchen", 1, 1),
        ("The Night Kitchen", 1, 2),
    ]
    for e, fmt in zip(library, FORMATS, strict=True):
        assert e.path.is_absolute() and e.path.is_file()
        assert e.path.suffix == f".{fmt}"
        assert e.path.parent.name == "Season 01"
        assert e.path.parent.parent.name == e.show
        assert re.fullmatch(rf"{e.show} - S01E0{e.episode}\.{fmt}", e.path.name)
        assert (e.duration_s, e.intro_s) == (DURATION_S, INTRO_S)
    assert not list(library[0].path.parent.parent.parent.rglob("*.part"))


def test_every_file_decodes_to_the_episode_duration(
    library: list[GeneratedEpisode], decoded: dict[tuple[str, int], np.ndarray]
) -> None:
    for e in library:
        # AAC in MP4 keeps up to one frame of end padding (64 ms at 16 kHz).
        assert len(decoded[e.show, e.episode]) / SR == pytest.approx(DURATION_S, abs=0.07)


def test_decoded_files_carry_the_reference_samples_aligned(
    library: list[GeneratedEpisode], decoded: dict[tuple[str, int], np.ndarray]
) -> None:
    for i, e in enumerate(library):
        reference = render_episode_samples(
            show_index=i // 2,  # two episodes per show
            season=1,
            episode=e.episode,
            duration_s=DURATION_S,
            intro_s=INTRO_S,
            seed=0,
        )
        n = len(reference)
        assert correlation(decoded[e.show, e.episode][:n], reference) > 0.95, e.path.name


def test_intro_is_shared_within_a_show_and_differs_between_shows(
    decoded: dict[tuple[str, int], np.ndarray],
) -> None:
    intro = slice(int(0.1 * SR), int((INTRO_S - 0.1) * SR))
    a1, a2 = decoded["Harbour Lights", 1][intro], decoded["Harbour Lights", 2][intro]
    b1 = decoded["The Night Kitchen", 1][intro]
    assert correlation(a1, a2) > 0.97
    assert abs(correlation(a1, b1)) < 0.3


def test_unique_parts_differ_between_episodes(
    decoded: dict[tuple[str, int], np.ndarray],
) -> None:
    content = slice(int((INTRO_S + 0.5) * SR), int((DURATION_S - 0.1) * SR))
    episodes = [x[content] for x in decoded.values()]
    for i in range(len(episodes)):
        for j in range(i + 1, len(episodes)):
            assert abs(correlation(episodes[i], episodes[j])) < 0.3


def test_rendering_is_deterministic_and_keyed_by_seed() -> None:
    kwargs = dict(show_index=1, season=1, episode=2, duration_s=8.0, intro_s=2.0)
    first = render_episode_samples(**kwargs, seed=3)
    assert first.dtype == np.float32 and first.shape == (8 * SAMPLE_RATE,)
    assert np.array_equal(first, render_episode_samples(**kwargs, seed=3))
    assert abs(correlation(first, render_episode_samples(**kwargs, seed=4))) < 0.3


def test_intro_samples_are_identical_in_every_episode_of_a_show() -> None:
    intro = render_intro_samples(show_index=0, intro_s=2.0, seed=0)
    for episode in (1, 2):
        x = render_episode_samples(
            show_index=0, season=1, episode=episode, duration_s=4.0, intro_s=2.0, seed=0
        )
        assert np.array_equal(x[: len(intro)], intro)
    assert not np.array_equal(x[len(intro) :], np.zeros(len(x) - len(intro)))


def test_dialogue_sits_10_to_15_db_over_the_music() -> None:
    kwargs = dict(show_index=0, season=1, episode=1, duration_s=12.0, intro_s=2.0, seed=0)
    mix = render_episode_samples(**kwargs).astype(np.float64)
    music = render_episode_samples(**kwargs, speech=False).astype(np.float64)
    speech = (mix - music)[2 * SR :]
    music = music[2 * SR :]
    # The music bed is rendered first from the episode's RNG, so it is identical with and
    # without dialogue and the difference is the dialogue alone.
    speech_rms = np.sqrt(np.mean(np.square(speech[np.abs(speech) > 1e-3])))
    music_rms = np.sqrt(np.mean(np.square(music[SR:])))
    assert np.abs(speech).max() > 0.1
    # 10-15 dB by design, give or take the ±2 dB each character speaks louder or softer.
    assert 7.0 < 20 * np.log10(speech_rms / music_rms) < 18.0


def test_a_remix_keeps_the_dialogue_and_replaces_the_music() -> None:
    kwargs = dict(show_index=1, season=1, episode=2, duration_s=12.0, intro_s=2.0, seed=3)
    original = render_episode_samples(**kwargs).astype(np.float64)
    remixed = render_remixed_episode_samples(**kwargs, remix=1).astype(np.float64)
    dialogue = render_dialogue_samples(**kwargs).astype(np.float64)
    bed = render_episode_samples(**kwargs, speech=False).astype(np.float64)
    assert remixed.shape == original.shape == dialogue.shape
    # The original is its own bed plus the shared dialogue (to float32 rounding) ...
    assert np.abs(original - (bed + dialogue)).max() < 1e-6
    assert np.abs(dialogue[: 2 * SR]).max() == 0.0 and np.abs(dialogue).max() > 0.1
    # ... and the remix the same dialogue over other music, intro included.
    other = remixed - dialogue
    for a, b in ((other[: 2 * SR], bed[: 2 * SR]), (other[3 * SR :], bed[3 * SR :])):
        assert np.sqrt(np.mean(np.square(a))) > 0.003
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.2
    again = render_remixed_episode_samples(**kwargs, remix=1)
    assert np.array_equal(again, remixed.astype(np.float32))
    assert not np.array_equal(render_remixed_episode_samples(**kwargs, remix=2), again)


def test_a_revoiced_remix_says_the_lines_from_the_same_seconds_in_other_voices() -> None:
    kwargs = dict(show_index=1, season=1, episode=2, duration_s=12.0, intro_s=2.0, seed=3)
    dialogue = render_dialogue_samples(**kwargs).astype(np.float64)
    remixed = render_remixed_episode_samples(**kwargs, remix=1).astype(np.float64)
    revoiced = render_remixed_episode_samples(**kwargs, remix=1, revoice=1)
    # The same music under it: the difference is the dialogue's.
    voices = revoiced.astype(np.float64) - remixed + dialogue

    def speaking(x: np.ndarray) -> np.ndarray:  # per 100 ms
        return np.abs(x[: len(x) // 1600 * 1600]).reshape(-1, 1600).max(axis=1) > 0.01

    said, again = speaking(dialogue), speaking(voices)
    assert (said & again).sum() / (said | again).sum() > 0.7
    starts = set(np.flatnonzero(said[1:] & ~said[:-1]).tolist())
    assert starts and set(np.flatnonzero(again[1:] & ~again[:-1]).tolist()) <= starts
    assert abs(np.corrcoef(dialogue, voices)[0, 1]) < 0.2  # other voices
    assert np.array_equal(render_remixed_episode_samples(**kwargs, remix=1, revoice=1), revoiced)
    with pytest.raises(ParameterError, match="revoice"):
        render_remixed_episode_samples(**kwargs, revoice=-1)


def test_a_remixed_library_has_the_original_names_and_lengths(
    tmp_path: Path, library: list[GeneratedEpisode]
) -> None:
    shows = len({e.show for e in library})
    remixed = generate_remixed_library(
        tmp_path / "remix", shows=shows, seasons=1, episodes=len(library) // shows,
        duration_s=DURATION_S, intro_s=INTRO_S, seed=0, formats=("flac",),
    )  # fmt: skip
    assert [(e.show, e.season, e.episode, e.duration_s, e.intro_s) for e in remixed] == [
        (e.show, e.season, e.episode, e.duration_s, e.intro_s) for e in library
    ]
    for e in remixed:
        assert e.path.is_relative_to(tmp_path / "remix") and e.path.suffix == ".flac"
        assert len(decode(e.path)) == round(DURATION_S * SR)
    with pytest.raises(ParameterError, match="remix"):
        generate_remixed_library(tmp_path / "bad", remix=0)


def test_unseen_audio_decodes_and_appears_in_no_episode(
    tmp_path: Path, library: list[GeneratedEpisode]
) -> None:
    path = generate_unseen_audio(tmp_path / "query.wav", duration_s=5.0, seed=0)
    x = decode(path)
    assert len(x) / SR == pytest.approx(5.0, abs=0.01)
    assert np.sqrt(np.mean(np.square(x))) > 0.02
    probe = x[SR : 3 * SR].astype(np.float64)
    for e in library:
        y = decode(e.path).astype(np.float64)
        scores = fftconvolve(y, probe[::-1], mode="valid")
        energy = fftconvolve(np.square(y), np.ones(len(probe)), mode="valid")
        normalised = scores / np.sqrt(np.maximum(energy, 1e-12) * (probe @ probe))
        assert normalised.max() < 0.3, e.path.name


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ParameterError):
        generate_library(tmp_path, duration_s=4.0, intro_s=4.0)
    with pytest.raises(ParameterError):
        generate_library(tmp_path, formats=("wma",))
    with pytest.raises(ParameterError):
        generate_library(tmp_path, seed=-1)
    with pytest.raises(ParameterError):
        generate_library(tmp_path, episodes=0)
    assert not list(tmp_path.iterdir())


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_library(
        tmp_path, shows=1, episodes=1, duration_s=2.0, intro_s=1.0, speech=False, progress=True
    )
    captured = capsys.readouterr()
    assert "1/1" in captured.err and captured.out == ""


# ----------------------------------------------------------------------------------------------
# Degradations


@pytest.mark.parametrize("name", sorted(degrade.DEGRADATIONS))
def test_every_preset_returns_finite_float32_of_the_right_length(
    name: str, clip: np.ndarray
) -> None:
    y = degrade.DEGRADATIONS[name](clip, SR, np.random.default_rng(0))
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.isfinite(y).all()
    speed, _, tempo = degrade.CHANGES.get(name, (1.0, 0.0, 1.0))
    assert len(y) == round(len(clip) / (speed * tempo))
    assert np.abs(y).max() <= 1.5


def test_cut_takes_the_requested_span(clip: np.ndarray) -> None:
    y = degrade.cut(clip, SR, start_s=1.5, duration_s=2.0)
    assert np.array_equal(y, clip[int(1.5 * SR) : int(3.5 * SR)])
    with pytest.raises(ParameterError):
        degrade.cut(clip, SR, start_s=7.0, duration_s=2.0)


@pytest.mark.parametrize("snr_db", [10.0, 0.0])
def test_white_noise_hits_the_target_snr(clip: np.ndarray, snr_db: float) -> None:
    y = degrade.white_noise(clip, SR, snr_db=snr_db, rng=np.random.default_rng(1))
    noise = y.astype(np.float64) - clip
    measured = 10 * np.log10(np.mean(np.square(clip.astype(np.float64))) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=1.0)
    assert band_energy(noise, 6000, 8000) / band_energy(noise, 500, 2500) == pytest.approx(
        1.0, rel=0.2
    )  # white: as much power per Hz high as low


def test_telephone_keeps_only_the_voice_band() -> None:
    x = (0.1 * np.random.default_rng(2).standard_normal(4 * SR)).astype(np.float32)
    y = degrade.telephone(x, SR)
    assert len(y) == len(x)

    def loss_db(lo: float, hi: float) -> float:
        return 10 * np.log10(band_energy(y, lo, hi) / band_energy(x, lo, hi))

    assert loss_db(20, 200) < -20
    assert loss_db(3600, 8000) < -20
    assert abs(loss_db(500, 3000)) < 3


def test_telephone_and_reverb_keep_the_clip_aligned(clip: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    for y in (degrade.telephone(clip, SR), degrade.reverb(clip, SR, rng=rng)):
        assert best_lag(y, clip, max_lag=800) == 0


def test_mp3_round_trip_stays_aligned_within_5_ms(clip: np.ndarray) -> None:
    y = degrade.mp3(clip, SR, bitrate_kbps=32)
    assert len(y) == len(clip)
    assert abs(best_lag(y, clip, max_lag=1600)) <= 0.005 * SR
    assert correlation(y, clip) > 0.8
    assert not np.array_equal(y, clip)


def test_reverb_tail_decays_at_the_requested_rt60() -> None:
    rt60 = 0.4
    impulse = np.zeros(SR, dtype=np.float32)
    impulse[0] = 1.0
    y = degrade.reverb(impulse, SR, rng=np.random.default_rng(4), rt60_s=rt60, wet=0.5)
    assert np.argmax(np.abs(y)) == 0
    assert y[0] == pytest.approx(np.sqrt(0.5))

    def energy_db(a: float, b: float) -> float:
        return 10 * np.log10(np.sum(np.square(y[int(a * rt60 * SR) : int(b * rt60 * SR)])))

    # -60 dB over rt60 is -18 dB between windows 0.3 rt60 apart.
    assert energy_db(0.5, 0.6) - energy_db(0.8, 0.9) == pytest.approx(18.0, abs=3.0)


def test_gain_scales_without_renormalising(clip: np.ndarray) -> None:
    quiet = degrade.gain(clip, SR, db=-18.0)
    rms = np.sqrt(np.mean(np.square(clip.astype(np.float64))))
    assert np.sqrt(np.mean(np.square(quiet.astype(np.float64)))) / rms == pytest.approx(
        10 ** (-18 / 20), rel=1e-4
    )
    loud = degrade.gain(clip, SR, db=30.0)
    assert np.abs(loud).max() == pytest.approx(1.0)


def test_speed_raises_pitch_and_tempo_together() -> None:
    t = np.arange(2 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = degrade.speed(tone, SR, factor=1.01)
    assert len(y) == round(len(tone) / 1.01)
    core = y[1000:-1000].astype(np.float64) * np.hanning(len(y) - 2000)
    spectrum = np.abs(np.fft.rfft(core, n=16 * SR))
    peak_hz = np.argmax(spectrum) * SR / (16 * SR)
    assert peak_hz == pytest.approx(1010.0, abs=1.0)


def _peak_hz(y: np.ndarray) -> float:
    core = y[1000:-1000].astype(np.float64) * np.hanning(len(y) - 2000)
    return float(np.argmax(np.abs(np.fft.rfft(core, n=16 * SR))) / 16)


def _onsets_s(y: np.ndarray) -> np.ndarray:
    """Where each burst of a click track starts (first sample above a tenth of the peak)."""
    loud = np.flatnonzero(np.abs(y) > 0.1 * np.abs(y).max())
    return loud[np.concatenate(([True], np.diff(loud) > SR // 4))] / SR


def _bursts() -> np.ndarray:
    x = np.zeros(4 * SR, dtype=np.float32)
    rng = np.random.default_rng(6)
    for at in (0.5, 1.5, 2.5, 3.5):
        x[int(at * SR) : int(at * SR) + 800] = 0.3 * rng.standard_normal(800)
    return x


@pytest.mark.parametrize("semitones", [1.0, -1.0])
def test_pitch_shift_moves_a_tone_by_semitones_and_keeps_the_timing(semitones: float) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(2 * SR) / SR)).astype(np.float32)
    y = degrade.pitch_shift(tone, SR, semitones=semitones)
    assert len(y) == len(tone)
    # rubberband lands within 0.1 semitone (0.6%) of the asked shift: a real shifter errs too.
    assert _peak_hz(y) == pytest.approx(1000.0 * 2 ** (semitones / 12), rel=0.006)
    bursts = _bursts()
    shifted = _onsets_s(degrade.pitch_shift(bursts, SR, semitones=semitones))
    np.testing.assert_allclose(shifted, _onsets_s(bursts), atol=0.03)


@pytest.mark.parametrize("method", ["atempo", "rubberband"])
@pytest.mark.parametrize("factor", [1.25, 0.8])
def test_tempo_shortens_the_clip_at_the_same_pitch_and_keeps_it_aligned(
    factor: float, method: str
) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(2 * SR) / SR)).astype(np.float32)
    y = degrade.tempo(tone, SR, factor=factor, method=method)
    assert len(y) == round(len(tone) / factor)
    assert _peak_hz(y) == pytest.approx(1000.0, rel=0.006)  # rubberband errs by up to 0.5%
    bursts = _bursts()
    stretched = _onsets_s(degrade.tempo(bursts, SR, factor=factor, method=method))
    # A burst at t in the source is at t / factor in the clip.
    np.testing.assert_allclose(stretched * factor, _onsets_s(bursts), atol=0.04)


def test_changes_out_of_range_are_parameter_errors(clip: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="semitones"):
        degrade.pitch_shift(clip, SR, semitones=13.0)
    with pytest.raises(ParameterError, match="tempo"):
        degrade.tempo(clip, SR, factor=3.0)
    with pytest.raises(ParameterError, match="method"):
        degrade.tempo(clip, SR, factor=1.1, method="sox")


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_room_impulse_response_starts_with_the_direct_sound_and_decays_at_rt60(
    rt60: float,
) -> None:
    ir = degrade.room_impulse_response(SR, rt60_s=rt60, rng=np.random.default_rng(7))
    assert np.argmax(np.abs(ir)) == 0 and ir[0] == pytest.approx(1.0)
    early = ir[1 : int(0.04 * SR) + 1]
    assert np.count_nonzero(np.abs(early) > 0.2) >= 6  # the early reflections

    def energy_db(a: float, b: float) -> float:
        return 10 * np.log10(np.sum(np.square(ir[int(a * rt60 * SR) : int(b * rt60 * SR)])))

    # -60 dB over rt60 is -18 dB between windows 0.3 rt60 apart (the tail dulls as it goes,
    # which loses a little more).
    assert energy_db(0.3, 0.4) - energy_db(0.6, 0.7) == pytest.approx(18.0, abs=4.0)
    # The diffuse tail past the early reflections: 0.5-2 times the direct sound's energy from
    # 5 ms, of which 15-50% is left after 45 ms at these RT60s.
    assert 0.05 <= np.sum(np.square(ir[int(0.045 * SR) :])) <= 1.2


def test_loudspeaker_room_band_limits_and_adds_room_noise(clip: np.ndarray) -> None:
    y = degrade.loudspeaker_room(clip, SR, rng=np.random.default_rng(8))
    assert y.dtype == np.float32 and len(y) == len(clip)
    assert best_lag(y, clip, max_lag=800) == 0  # the direct sound keeps the clip aligned
    x = (0.1 * np.random.default_rng(9).standard_normal(4 * SR)).astype(np.float32)
    quiet_room = degrade.loudspeaker_room(x, SR, rng=np.random.default_rng(9), snr_db=(60, 60))

    def loss_db(lo: float, hi: float) -> float:
        return 10 * np.log10(band_energy(quiet_room, lo, hi) / band_energy(x, lo, hi))

    assert loss_db(7600, 8000) - loss_db(1000, 3000) < -20
    assert loss_db(20, 80) - loss_db(1000, 3000) < -20
    noisy = degrade.loudspeaker_room(x, SR, rng=np.random.default_rng(9), snr_db=(10, 10))
    noise = noisy.astype(np.float64) - quiet_room
    assert 10 * np.log10(np.mean(quiet_room**2) / np.mean(noise**2)) == pytest.approx(10, abs=0.5)
    with pytest.raises(ParameterError, match="silent"):
        degrade.loudspeaker_room(np.zeros(SR, np.float32), SR, rng=np.random.default_rng(0))
