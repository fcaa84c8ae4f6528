"""A synthetic, deterministic library of TV-like episodes: a shared intro, then dialogue over music.

The tree looks like a real media library (``ROOT/<Show>/Season NN/<Show> - SxxEyy.<ext>``) so the
demo, the tests and the accuracy benchmark exercise the same scanning and decoding paths as
production. Every sample is a function of the seed alone: speech comes from espeak-ng (which is
deterministic for a given voice, rate, pitch and text) and everything else from numpy RNGs keyed
by ``(seed, domain, show, season, episode)``, so adding an episode never changes the others.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly
from tqdm import tqdm

from citywok_pipeline.fingerprint.params import ParameterError

SAMPLE_RATE = 16_000
"""Hz. Every rendered signal is mono float at this rate before encoding."""

SHOW_NAMES = (
    "Harbour Lights",
    "The Night Kitchen",
    "Copper Street",
    "Northern Line",
    "Paper Moons",
    "Second Helpings",
    "Blue Hour",
    "Station Road",
)

# RNG domains: the same (seed, show, season, episode) must never draw the same stream for two
# different purposes, and unseen audio must never coincide with any library episode.
_DOMAIN_INTRO = 1
_DOMAIN_EPISODE = 2
_DOMAIN_UNSEEN = 3
_DOMAIN_REMIX = 4
_DOMAIN_REVOICE = 5

_SPEECH_RMS = 0.1
_INTRO_RMS = 0.12
_PEAK_LIMIT = 0.9

# Plain "en-gb" ignores "+variant" in espeak-ng 1.51 (it falls back to the default voice), so
# the British accents are named by their regional voices.
_VOICES = (
    "en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-scotland", "en-029",
)  # fmt: skip
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4")

_ENCODERS: dict[str, tuple[str, list[str]]] = {
    "mp3": ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    "mkv": ("matroska", ["-c:a", "libopus", "-b:a", "64k"]),
    "webm": ("webm", ["-c:a", "libopus", "-b:a", "64k"]),
    "opus": ("opus", ["-c:a", "libopus", "-b:a", "48k"]),
    "ogg": ("ogg", ["-c:a", "libvorbis", "-q:a", "4"]),
    "mp4": ("mp4", ["-c:a", "aac", "-b:a", "96k"]),
    "m4a": ("ipod", ["-c:a", "aac", "-b:a", "96k"]),
    # No raw ".aac": ADTS cannot record the encoder's 1024-sample priming, so it would decode
    # 64 ms late and skew every offset measured against the reference.
    "flac": ("flac", ["-c:a", "flac"]),
    "wav": ("wav", ["-c:a", "pcm_s16le"]),
}
SUPPORTED_FORMATS = tuple(_ENCODERS)
"""File extensions :func:`generate_library` and :func:`generate_unseen_audio` can write."""


@dataclass(frozen=True)
class GeneratedEpisode:
    """One episode written by :func:`generate_library`.

    Attributes
    ----------
    show : str
        Show name, also the top-level folder.
    season, episode : int
        1-based season and episode numbers.
    path : Path
        Absolute path of the encoded file.
    duration_s : float
        Length of the rendered audio, in seconds.
    intro_s : float
        The show's shared intro occupies ``[0, intro_s)`` of every episode of the show; the
        episode's unique content is ``[intro_s, duration_s)``.
    """

    show: str
    season: int
    episode: int
    path: Path
    duration_s: float
    intro_s: float


@dataclass(frozen=True)
class _Vocabulary:
    names: tuple[str, ...]
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs_past: tuple[str, ...]
    verbs_base: tuple[str, ...]
    places: tuple[str, ...]
    times: tuple[str, ...]


_LIBRARY_WORDS = _Vocabulary(
    names=("Maya", "Tom", "Priya", "Leon", "Grace", "Omar", "Nina", "Sam", "Rosa", "Felix",
           "Hannah", "Victor", "Iris", "Declan", "June", "Marcus"),
    nouns=("kettle", "letter", "bicycle", "garden", "window", "ticket", "sandwich", "umbrella",
           "painting", "ladder", "suitcase", "recipe", "candle", "guitar", "notebook", "basket",
           "lantern", "carpet", "envelope", "mirror", "teapot", "bridge", "harbour", "bakery",
           "orchard", "trumpet", "wardrobe", "pebble", "compass", "blanket", "parcel", "radio"),
    adjectives=("old", "broken", "shiny", "quiet", "enormous", "tiny", "yellow", "strange",
                "careful", "muddy", "lovely", "crooked", "golden", "noisy", "tidy", "soggy"),
    verbs_past=("found", "painted", "borrowed", "dropped", "fixed", "hid", "sold", "carried",
                "opened", "cleaned", "forgot", "wrapped", "polished", "followed", "measured"),
    verbs_base=("find", "paint", "borrow", "fix", "hide", "sell", "carry", "open", "clean",
                "wrap", "polish", "follow", "measure", "return", "check"),
    places=("at the market", "in the kitchen", "behind the shed", "on the night bus",
            "by the river", "in the attic", "at the station", "under the stairs",
            "near the lighthouse", "outside the bakery", "in the car park", "at the harbour"),
    times=("this morning", "last night", "on Tuesday", "before lunch", "after the storm",
           "at midnight", "last summer", "yesterday afternoon", "just now", "every Sunday"),
)  # fmt: skip

# Disjoint from the library words, so unseen clips share no sentence with any episode.
_UNSEEN_WORDS = _Vocabulary(
    names=("Edgar", "Lucia", "Tobias", "Wren", "Anika", "Bruno", "Celeste", "Dmitri", "Fiona",
           "Gideon", "Ingrid", "Kofi"),
    nouns=("telescope", "glacier", "satellite", "volcano", "microscope", "asteroid", "canyon",
           "submarine", "observatory", "fossil", "comet", "reactor", "meteor", "crystal",
           "nebula", "tundra", "geyser", "magnet", "pendulum", "barometer"),
    adjectives=("frozen", "distant", "magnetic", "ancient", "luminous", "hollow", "silver",
                "volcanic", "orbital", "fragile", "polar", "molten"),
    verbs_past=("launched", "surveyed", "calibrated", "detected", "charted", "sampled",
                "photographed", "drilled", "weighed", "recorded", "tracked", "observed"),
    verbs_base=("launch", "survey", "calibrate", "detect", "chart", "sample", "photograph",
                "drill", "weigh", "record", "track", "observe"),
    places=("above the glacier", "inside the crater", "on the research vessel",
            "beyond the ridge", "at the observatory", "across the tundra", "in the laboratory",
            "over the ice shelf"),
    times=("during the eclipse", "at dawn", "in the spring survey", "before the launch",
           "after the quake", "at low tide", "in the polar night", "last expedition"),
)  # fmt: skip

_TEMPLATES = (
    "{name} {verb_past} the {adj} {noun} {place}.",
    "Did you see the {noun} {place} {time}?",
    "I think we should {verb_base} the {noun} before {name} gets back.",
    "The {noun} was {adj}, and the {noun2} was even more {adj2}.",
    "{name}, have you {verb_past} my {noun}?",
    "Nobody {verb_past} the {adj} {noun} {time}.",
    "{name} and {name2} {verb_past} a {noun} {place} {time}.",
    "Honestly, I never wanted to {verb_base} that {adj} {noun}.",
    "Where did you put the {noun}?",
    "If it rains {time}, we will {verb_base} the {noun2} {place}.",
    "Listen, {name}, the {noun} is {adj} and the {noun2} is gone!",
    "We {verb_past} the {noun} {time}, {place}, and nobody noticed.",
    "Right then. {name} will {verb_base} the {adj} {noun}.",
    "Is that the {adj} {noun} {name2} {verb_past} {time}?",
)


@dataclass(frozen=True)
class _Character:
    voice: str
    words_per_minute: int
    pitch: int
    gain_db: float


@dataclass(frozen=True)
class _Line:
    character: _Character
    text: str


# ----------------------------------------------------------------------------------------------
# Public API


def generate_library(
    root: Path,
    *,
    shows: int = 2,
    seasons: int = 1,
    episodes: int = 3,
    duration_s: float = 40.0,
    intro_s: float = 8.0,
    seed: int = 0,
    formats: Sequence[str] = ("mp3",),
    speech: bool = True,
    progress: bool = False,
) -> list[GeneratedEpisode]:
    """Write a media tree of synthetic TV episodes and return what was written.

    Parameters
    ----------
    root : Path
        Library root; created if missing. Files are written as
        ``root/<Show>/Season NN/<Show> - SxxEyy.<ext>``, each atomically (a ``.part`` file
        renamed into place), so a watcher never sees a half-written episode.
    shows, seasons, episodes : int
        How many shows, seasons per show and episodes per season.
    duration_s : float
        Length of every episode, in seconds.
    intro_s : float
        Length of the shared intro at the start of every episode of a show, in seconds;
        ``0 <= intro_s < duration_s``.
    seed : int
        Non-negative. The same seed renders identical samples (before encoding).
    formats : sequence of str
        File extensions from :data:`SUPPORTED_FORMATS`, cycled over the episodes in order.
    speech : bool
        Speak dialogue over the music; ``False`` renders music only (no espeak-ng needed).
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    list of GeneratedEpisode
        In show, season, episode order.

    Raises
    ------
    ParameterError
        On invalid counts, durations, seed or formats.
    RuntimeError
        When ffmpeg (or, with ``speech``, espeak-ng) is missing or fails.
    """
    return _write_library(
        root, shows=shows, seasons=seasons, episodes=episodes, duration_s=duration_s,
        intro_s=intro_s, seed=seed, formats=formats, speech=speech, progress=progress, remix=0,
    )  # fmt: skip


def _write_library(
    root: Path,
    *,
    shows: int,
    seasons: int,
    episodes: int,
    duration_s: float,
    intro_s: float,
    seed: int,
    formats: Sequence[str],
    speech: bool,
    progress: bool,
    remix: int,
    bed_db: tuple[float, float] = (10.0, 15.0),
    revoice: int = 0,
) -> list[GeneratedEpisode]:
    _check_durations(duration_s=duration_s, intro_s=intro_s)
    _check_seed(seed)
    if min(shows, seasons, episodes) < 1:
        raise ParameterError("shows, seasons and episodes must each be at least 1")
    if not formats:
        raise ParameterError("formats must name at least one file extension")
    for fmt in formats:
        _check_format(fmt)
    _require_tool("ffmpeg")
    if speech:
        _require_tool("espeak-ng")

    root = Path(root).absolute()
    jobs: list[tuple[int, int, int, str]] = []
    for show_index in range(shows):
        for season in range(1, seasons + 1):
            for episode in range(1, episodes + 1):
                jobs.append((show_index, season, episode, formats[len(jobs) % len(formats)]))

    intros = (
        []
        if remix
        else [render_intro_samples(show_index=i, intro_s=intro_s, seed=seed) for i in range(shows)]
    )
    n_intro = round(intro_s * SAMPLE_RATE)

    def make(job: tuple[int, int, int, str]) -> GeneratedEpisode:
        show_index, season, episode, fmt = job
        show = show_name(show_index)
        if remix:
            samples = _render_remixed(
                show_index=show_index, season=season, episode=episode,
                duration_s=duration_s, intro_s=intro_s, seed=seed, remix=remix, bed_db=bed_db,
                revoice=revoice,
            )  # fmt: skip
        else:
            samples = _render_episode(
                intros[show_index],
                show_index=show_index,
                season=season,
                episode=episode,
                duration_s=duration_s,
                seed=seed,
                speech=speech,
            )
        path = root / show / f"Season {season:02d}" / f"{show} - S{season:02d}E{episode:02d}.{fmt}"
        encode(samples, path, sample_rate=SAMPLE_RATE)
        return GeneratedEpisode(
            show=show,
            season=season,
            episode=episode,
            path=path,
            duration_s=len(samples) / SAMPLE_RATE,
            intro_s=n_intro / SAMPLE_RATE,
        )

    # Threads suffice: the work is espeak-ng and ffmpeg subprocesses plus numpy, which release
    # the GIL; each episode owns its RNG, so the schedule cannot change the samples.
    results: list[GeneratedEpisode] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool,
        tqdm(total=len(jobs), unit="episode", file=sys.stderr, disable=not progress) as bar,
    ):
        for generated in pool.map(make, jobs):
            results.append(generated)
            bar.update(1)
    return results


def generate_remixed_library(
    root: Path,
    *,
    shows: int = 2,
    seasons: int = 1,
    episodes: int = 3,
    duration_s: float = 40.0,
    intro_s: float = 8.0,
    seed: int = 0,
    remix: int = 1,
    bed_db: tuple[float, float] = (10.0, 15.0),
    revoice: int = 0,
    formats: Sequence[str] = ("mp3",),
    progress: bool = False,
) -> list[GeneratedEpisode]:
    """The library :func:`generate_library` writes with the same arguments, each episode
    with its dialogue kept sample for sample and its music replaced: other music under the
    dialogue and another theme over the intro, as streaming versions whose music licences
    ran out, dubbed or re-mixed uploads are.

    ``remix`` (at least 1) picks the replacement music; ``bed_db`` how far under the
    dialogue it sits, in dB (drawn per episode from this range; the originals' beds are 10-15
    dB under, a re-mixed upload's often louder). ``revoice`` (0: the dialogue kept sample for
    sample) re-records the dialogue instead, as a dub in the same language or new ADR would:
    the same lines, each starting at the same second, said by other voices (another cast
    for each ``revoice``), so the words are the episode's and the audio is not (the
    fingerprint finds nothing in it). Every other parameter is
    :func:`generate_library`'s, and the same tree of names is written under ``root`` (give
    another root than the original's). Returns what was written, in the same order.
    """
    _check_remix(remix, bed_db, revoice)
    return _write_library(
        root, shows=shows, seasons=seasons, episodes=episodes, duration_s=duration_s,
        intro_s=intro_s, seed=seed, formats=formats, speech=True, progress=progress,
        remix=remix, bed_db=bed_db, revoice=revoice,
    )  # fmt: skip


def render_remixed_episode_samples(
    *,
    show_index: int,
    season: int,
    episode: int,
    duration_s: float,
    intro_s: float,
    seed: int,
    remix: int = 1,
    bed_db: tuple[float, float] = (10.0, 15.0),
    revoice: int = 0,
) -> np.ndarray:
    """The samples :func:`generate_remixed_library` encodes for one episode: the dialogue of
    :func:`render_episode_samples` (or, with ``revoice``, its lines said by other voices)
    over other music. float32 at :data:`SAMPLE_RATE`."""
    _check_durations(duration_s=duration_s, intro_s=intro_s)
    _check_seed(seed)
    _check_remix(remix, bed_db, revoice)
    return _render_remixed(
        show_index=show_index, season=season, episode=episode, duration_s=duration_s,
        intro_s=intro_s, seed=seed, remix=remix, bed_db=bed_db, revoice=revoice,
    )  # fmt: skip


def render_dialogue_samples(
    *,
    show_index: int,
    season: int,
    episode: int,
    duration_s: float,
    intro_s: float,
    seed: int,
) -> np.ndarray:
    """The dialogue alone of one episode (silence under the intro and between lines), the
    stem that :func:`render_episode_samples` and :func:`render_remixed_episode_samples`
    share. float32 at :data:`SAMPLE_RATE`, the episode's length."""
    _check_durations(duration_s=duration_s, intro_s=intro_s)
    _check_seed(seed)
    n = round(duration_s * SAMPLE_RATE)
    n_intro = round(intro_s * SAMPLE_RATE)
    rng = np.random.default_rng([seed, _DOMAIN_EPISODE, show_index, season, episode])
    _, dialogue = _render_stems(rng, n - n_intro, speech=True, words=_LIBRARY_WORDS)
    return np.concatenate([np.zeros(n_intro), dialogue]).astype(np.float32)


def generate_unseen_audio(path: Path, *, duration_s: float, seed: int) -> Path:
    """Write speech over music that appears in no library :func:`generate_library` can make.

    The RNG domain and the vocabulary are disjoint from the library's, so no seed of either
    function can reproduce the other's audio: use it for "no match" tests.

    Parameters
    ----------
    path : Path
        Output file; its extension picks the format (see :data:`SUPPORTED_FORMATS`).
    duration_s : float
        Length in seconds.
    seed : int
        Non-negative.

    Returns
    -------
    Path
        ``path``, absolute.
    """
    path = Path(path).absolute()
    _check_format(path.suffix.lstrip("."))
    _require_tool("ffmpeg")
    _require_tool("espeak-ng")
    encode(render_unseen_samples(duration_s=duration_s, seed=seed), path, sample_rate=SAMPLE_RATE)
    return path


def show_name(show_index: int) -> str:
    """Name of the ``show_index``-th generated show (0-based); unique for every index."""
    if show_index < 0:
        raise ParameterError(f"show_index must be non-negative, got {show_index}")
    base = SHOW_NAMES[show_index % len(SHOW_NAMES)]
    cycle = show_index // len(SHOW_NAMES)
    return base if cycle == 0 else f"{base} {cycle + 1}"


def render_intro_samples(*, show_index: int, intro_s: float, seed: int) -> np.ndarray:
    """The show's theme tune, exactly as it starts every episode of that show.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(intro_s * SAMPLE_RATE),)``, at :data:`SAMPLE_RATE`.
    """
    _check_seed(seed)
    if intro_s < 0:
        raise ParameterError(f"intro_s must be non-negative, got {intro_s}")
    n = round(intro_s * SAMPLE_RATE)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng([seed, _DOMAIN_INTRO, show_index])
    theme = _render_music(
        rng, n, SAMPLE_RATE, tempo_bpm=(118.0, 140.0), lead_gain=1.0, drum_prob=1.0
    )
    theme = _normalise(theme, rms=_INTRO_RMS)
    # A short fade in and out, as title sequences have; it also keeps the cut to the episode
    # from clicking, which would put a broadband transient at the same place in every episode.
    return _fade(theme, SAMPLE_RATE, fade_in_s=0.05, fade_out_s=min(0.5, intro_s / 4)).astype(
        np.float32
    )


def render_episode_samples(
    *,
    show_index: int,
    season: int,
    episode: int,
    duration_s: float,
    intro_s: float,
    seed: int,
    speech: bool = True,
) -> np.ndarray:
    """The exact samples :func:`generate_library` encodes for one episode (the reference audio).

    Parameters are those of :func:`generate_library`; ``show_index`` is 0-based, ``season``
    and ``episode`` 1-based.

    Returns
    -------
    np.ndarray
        float32 in ``[-1, 1]``, shape ``(round(duration_s * SAMPLE_RATE),)``, at
        :data:`SAMPLE_RATE`; the first ``round(intro_s * SAMPLE_RATE)`` samples are the intro.
    """
    _check_durations(duration_s=duration_s, intro_s=intro_s)
    intro = render_intro_samples(show_index=show_index, intro_s=intro_s, seed=seed)
    return _render_episode(
        intro,
        show_index=show_index,
        season=season,
        episode=episode,
        duration_s=duration_s,
        seed=seed,
        speech=speech,
    )


def render_unseen_samples(*, duration_s: float, seed: int) -> np.ndarray:
    """The samples :func:`generate_unseen_audio` encodes: float32 at :data:`SAMPLE_RATE`."""
    _check_durations(duration_s=duration_s, intro_s=0.0)
    _check_seed(seed)
    rng = np.random.default_rng([seed, _DOMAIN_UNSEEN])
    n = round(duration_s * SAMPLE_RATE)
    return _render_content(rng, n, speech=True, words=_UNSEEN_WORDS)


def encode(samples: np.ndarray, path: Path, *, sample_rate: int) -> Path:
    """Encode mono float samples to ``path`` with ffmpeg; the extension picks the codec.

    The file is written to ``<path>.part`` and renamed, and encoded bit-exactly (no
    encoder version string or timestamps), so the same samples always give the same bytes.
    """
    path = Path(path)
    container, codec_args = _ENCODERS[_check_format(path.suffix.lstrip("."))]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    audio = np.ascontiguousarray(samples, dtype="<f4")
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
        *codec_args,
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
        "-f", container, str(partial),
    ]  # fmt: skip
    result = subprocess.run(cmd, input=audio.tobytes(), capture_output=True, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"ffmpeg could not encode {path.name}: {result.stderr.decode(errors='replace')}"
        )
    os.replace(partial, path)
    return path


# ----------------------------------------------------------------------------------------------
# Rendering


def _render_episode(
    intro: np.ndarray,
    *,
    show_index: int,
    season: int,
    episode: int,
    duration_s: float,
    seed: int,
    speech: bool,
) -> np.ndarray:
    _check_seed(seed)
    n = round(duration_s * SAMPLE_RATE)
    rng = np.random.default_rng([seed, _DOMAIN_EPISODE, show_index, season, episode])
    content = _render_content(rng, n - len(intro), speech=speech, words=_LIBRARY_WORDS)
    return np.concatenate([intro.astype(np.float32), content])


def _render_remixed(
    *,
    show_index: int,
    season: int,
    episode: int,
    duration_s: float,
    intro_s: float,
    seed: int,
    remix: int,
    bed_db: tuple[float, float],
    revoice: int = 0,
) -> np.ndarray:
    n = round(duration_s * SAMPLE_RATE)
    n_intro = round(intro_s * SAMPLE_RATE)
    # The original's stream, drawn in the original's order: the same dialogue, sample for
    # sample (its music bed is drawn only to keep the stream in step, then dropped).
    rng = np.random.default_rng([seed, _DOMAIN_EPISODE, show_index, season, episode])
    placed: list[tuple[int, str, int]] = []
    _, dialogue = _render_stems(rng, n - n_intro, speech=True, words=_LIBRARY_WORDS, placed=placed)
    if revoice:
        voices = np.random.default_rng(
            [seed, _DOMAIN_REVOICE, revoice, show_index, season, episode]
        )
        dialogue = _revoice(placed, n - n_intro, voices)
    other = np.random.default_rng([seed, _DOMAIN_REMIX, remix, show_index, season, episode])
    bed = _render_bed(other, n - n_intro, bed_db)
    intro = np.zeros(0, np.float32)
    if n_intro:
        # Another theme: the licence for the title music went with the rest.
        theme = _render_music(
            other, n_intro, SAMPLE_RATE, tempo_bpm=(118.0, 140.0), lead_gain=1.0, drum_prob=1.0
        )
        intro = _fade(
            _normalise(theme, rms=_INTRO_RMS),
            SAMPLE_RATE,
            fade_in_s=0.05,
            fade_out_s=min(0.5, intro_s / 4),
        ).astype(np.float32)
    return np.concatenate([intro, _mix(bed, dialogue)])


def _render_content(
    rng: np.random.Generator, n: int, *, speech: bool, words: _Vocabulary
) -> np.ndarray:
    """Dialogue over background music, ``n`` samples, float32."""
    bed, dialogue = _render_stems(rng, n, speech=speech, words=words)
    return _mix(bed, dialogue)


def _render_stems(
    rng: np.random.Generator,
    n: int,
    *,
    speech: bool,
    words: _Vocabulary,
    placed: list[tuple[int, str, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The music bed (at its level in the mix) and the dialogue, ``n`` samples each; each
    line's ``(start, text, length)`` in samples is appended to ``placed`` when given."""
    sr = SAMPLE_RATE
    bed = _render_bed(rng, n)
    dialogue = _render_dialogue(rng, n, sr, words=words, placed=placed) if speech else np.zeros(n)
    return bed, dialogue


def _render_bed(
    rng: np.random.Generator, n: int, bed_db: tuple[float, float] = (10.0, 15.0)
) -> np.ndarray:
    sr = SAMPLE_RATE
    music = _render_music(rng, n, sr, tempo_bpm=(76.0, 126.0), lead_gain=0.6, drum_prob=0.7)
    # TV mixes keep the music bed 10-15 dB under the dialogue.
    music_rms = _SPEECH_RMS * 10 ** (-rng.uniform(*bed_db) / 20)
    return _fade(_normalise(music, rms=music_rms), sr, fade_in_s=0.2, fade_out_s=0.0)


def _mix(bed: np.ndarray, dialogue: np.ndarray) -> np.ndarray:
    # The levels keep peaks well under full scale; the clip only guards a freak sum.
    return np.clip(bed + dialogue, -1.0, 1.0).astype(np.float32)


def _render_dialogue(
    rng: np.random.Generator,
    n: int,
    sr: int,
    *,
    words: _Vocabulary,
    placed: list[tuple[int, str, int]] | None = None,
) -> np.ndarray:
    out = np.zeros(n)
    cast = [_random_character(rng) for _ in range(int(rng.integers(2, 4)))]
    pos = int(rng.uniform(0.3, 1.0) * sr)
    said: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="citywok-speech-") as tmp:
        while pos < n - sr:
            # Synthesize in batches sized to roughly fill what is left; espeak-ng speaks about
            # 2.5 words a second at these rates, so a sentence of ~8 words takes ~3 s with its
            # pause.
            batch = max(2, int((n - pos) / sr / 3.0) + 1)
            lines = []
            for _ in range(batch):
                text = _sentence(rng, words)
                # A line said twice would match itself at two offsets of the same episode.
                while text in said:
                    text = _sentence(rng, words)
                said.add(text)
                lines.append(_Line(cast[int(rng.integers(len(cast)))], text))
            for line, clip in zip(lines, _speak(lines, sr, Path(tmp)), strict=True):
                if pos >= n - sr:
                    break
                room = n - pos
                if len(clip) > room:
                    # A line cut off by the end of the episode, as an edit would cut it.
                    clip = _fade(clip[:room], sr, fade_in_s=0.0, fade_out_s=0.05)
                out[pos : pos + len(clip)] += clip
                if placed is not None:
                    placed.append((pos, line.text, len(clip)))
                pos += len(clip) + int(rng.uniform(0.25, 1.2) * sr)
    return out


def _revoice(
    placed: Sequence[tuple[int, str, int]], n: int, rng: np.random.Generator
) -> np.ndarray:
    """The lines ``placed`` (start, text, length) said again by another cast, each from the
    same sample; a line that would run into the next is said again faster, then cut."""
    sr = SAMPLE_RATE
    out = np.zeros(n)
    cast = [_random_character(rng) for _ in range(int(rng.integers(2, 4)))]
    lines = [_Line(cast[int(rng.integers(len(cast)))], text) for _, text, _ in placed]
    room = [
        (placed[i + 1][0] if i + 1 < len(placed) else n) - pos - int(0.1 * sr)
        for i, (pos, _, _) in enumerate(placed)
    ]
    with tempfile.TemporaryDirectory(prefix="citywok-revoice-") as tmp:
        clips = _speak(lines, sr, Path(tmp))
        slow = [i for i, clip in enumerate(clips) if len(clip) > room[i]]
        faster = [
            _Line(
                _faster(lines[i].character, len(clips[i]) / max(room[i], 1)),
                lines[i].text,
            )
            for i in slow
        ]
        for i, clip in zip(slow, _speak(faster, sr, Path(tmp)), strict=True):
            clips[i] = clip
    for (pos, _, _), clip, space in zip(placed, clips, room, strict=True):
        if len(clip) > space:
            clip = _fade(clip[: max(space, 0)], sr, fade_in_s=0.0, fade_out_s=0.05)
        out[pos : pos + len(clip)] += clip
    return out


def _faster(character: _Character, factor: float) -> _Character:
    """``character`` speaking ``factor`` times as fast (a little more, within espeak-ng's range)."""
    wpm = min(450, int(np.ceil(character.words_per_minute * factor * 1.05)))
    return _Character(character.voice, wpm, character.pitch, character.gain_db)


def _random_character(rng: np.random.Generator) -> _Character:
    voice = (
        f"{_VOICES[int(rng.integers(len(_VOICES)))]}+{_VARIANTS[int(rng.integers(len(_VARIANTS)))]}"
    )
    return _Character(
        voice=voice,
        words_per_minute=int(rng.integers(140, 181)),
        pitch=int(rng.integers(25, 76)),
        gain_db=float(rng.uniform(-2.0, 2.0)),
    )


def _sentence(rng: np.random.Generator, words: _Vocabulary) -> str:
    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    template = pick(_TEMPLATES)
    names = rng.choice(len(words.names), size=2, replace=False)
    nouns = rng.choice(len(words.nouns), size=2, replace=False)
    adjectives = rng.choice(len(words.adjectives), size=2, replace=False)
    return template.format(
        name=words.names[names[0]],
        name2=words.names[names[1]],
        noun=words.nouns[nouns[0]],
        noun2=words.nouns[nouns[1]],
        adj=words.adjectives[adjectives[0]],
        adj2=words.adjectives[adjectives[1]],
        verb_past=pick(words.verbs_past),
        verb_base=pick(words.verbs_base),
        place=pick(words.places),
        time=pick(words.times),
    )


def _speak(lines: Sequence[_Line], sr: int, tmp: Path) -> list[np.ndarray]:
    """One espeak-ng process per line, all started at once: each takes ~15 ms, mostly start-up."""
    procs = []
    for i, line in enumerate(lines):
        out = tmp / f"line{i}.wav"
        cmd = [
            "espeak-ng",
            "-v", line.character.voice,
            "-s", str(line.character.words_per_minute),
            "-p", str(line.character.pitch),
            "-w", str(out),
            line.text,
        ]  # fmt: skip
        procs.append(
            (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
        )
    # Reap every process before raising, so a failure leaves none behind.
    errors = [proc.communicate()[1] for proc, _ in procs]
    clips = []
    for (proc, out), line, err in zip(procs, lines, errors, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed on {line.text!r}: {err.decode(errors='replace')}")
        clip = _trim_silence(_read_wav(out, sr))
        clip = _normalise(clip, rms=_SPEECH_RMS * 10 ** (line.character.gain_db / 20))
        clips.append(clip)
    return clips


def _read_wav(path: Path, sr: int) -> np.ndarray:
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise RuntimeError(f"{path.name}: expected 16-bit PCM from espeak-ng")
        rate, channels = f.getframerate(), f.getnchannels()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    x = pcm.reshape(-1, channels).mean(axis=1) / 32768.0
    g = gcd(sr, rate)
    return resample_poly(x, sr // g, rate // g) if rate != sr else x


def _trim_silence(x: np.ndarray, *, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * max(float(np.abs(x).max()), 1e-9))
    if len(loud) == 0:
        return x[:0]
    return x[loud[0] : loud[-1] + 1]


# ----------------------------------------------------------------------------------------------
# Music


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _envelope(n: int, sr: int, *, attack_s: float, decay_s: float, release_s: float) -> np.ndarray:
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / max(attack_s, 1e-4)) * np.exp(-t / decay_s)
    r = min(n, int(release_s * sr))
    if r > 0:
        env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def _tone(
    freq: float,
    n: int,
    sr: int,
    *,
    partials: np.ndarray,
    attack_s: float,
    decay_s: float,
    vibrato: float = 0.0,
    phase0: float = 0.0,
) -> np.ndarray:
    t = np.arange(n) / sr
    phase = 2 * np.pi * freq * t + phase0
    if vibrato:
        phase += vibrato * np.sin(2 * np.pi * 5.5 * t)
    # Harmonics by the Chebyshev recurrence sin((k+1)x) = 2cos(x)sin(kx) - sin((k-1)x):
    # one sin and one cos per note instead of one sin per partial, the bulk of the render time.
    s1, two_cos = np.sin(phase), 2 * np.cos(phase)
    prev, cur = np.zeros_like(phase), s1
    sig = partials[0] * s1
    for a in partials[1:]:
        prev, cur = cur, two_cos * cur - prev
        sig += a * cur
    return sig * _envelope(n, sr, attack_s=attack_s, decay_s=decay_s, release_s=0.03)


def _add(buf: np.ndarray, start: int, sig: np.ndarray) -> None:
    end = min(len(buf), start + len(sig))
    if end > start >= 0:
        buf[start:end] += sig[: end - start]


def _render_music(
    rng: np.random.Generator,
    n: int,
    sr: int,
    *,
    tempo_bpm: tuple[float, float],
    lead_gain: float,
    drum_prob: float,
) -> np.ndarray:
    """Chords, bass, a wandering melody and noise-burst drums; never periodic over the piece.

    Every bar draws its chord, melody, bass rhythm and drum pattern afresh, so no stretch of
    the result repeats: periodic audio would make offsets ambiguous within an episode.
    """
    out = np.zeros(n)
    beat = int(sr * 60.0 / rng.uniform(*tempo_bpm))
    root = int(rng.integers(45, 57))
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10])
    # Timbres per piece, so episodes differ in colour as well as notes.
    pad_partials = np.array([1.0, *rng.uniform(0.05, 0.5, size=3)])
    lead_partials = np.array([1.0, *rng.uniform(0.1, 0.7, size=4)])
    bass_partials = np.array([1.0, rng.uniform(0.2, 0.6)])
    degree = 0
    melody_step = int(rng.integers(7, 14))

    def scale_note(step: int) -> int:
        return root + 12 * (step // 7) + int(scale[step % 7])

    for bar_start in range(0, n, 4 * beat):
        # Chords wander rather than cycle, so the progression never loops.
        degree = (degree + int(rng.choice([1, 2, 3, 4, 5, 6]))) % 7
        # A fresh voicing, detuning and start phase each time, so a chord that comes back does
        # not bring back the same waveform (or the same spectral peaks) as last time.
        splits = [0, 4] if rng.random() < 0.6 else [0, 2, 4]
        for a, b in itertools.pairwise(splits):
            steps = [0, 2, 4, 6] if rng.random() < 0.3 else [0, 2, 4]
            for step in steps:
                note = scale_note(degree + step) + 12 * int(rng.integers(1, 3))
                freq = _midi_hz(note) * 2 ** (rng.uniform(-6, 6) / 1200)
                pad = _tone(
                    freq,
                    (b - a) * beat,
                    sr,
                    partials=pad_partials,
                    attack_s=0.08,
                    decay_s=3.0,
                    phase0=rng.uniform(0, 2 * np.pi),
                )
                _add(out, bar_start + a * beat, rng.uniform(0.12, 0.22) * pad)

        bass_hits = [(0, 2), (0, 1, 2, 3), (0, 1.5, 2), (0, 2.5, 3)][int(rng.integers(4))]
        for hit in bass_hits:
            bass = _tone(
                _midi_hz(scale_note(degree) - 12),
                beat,
                sr,
                partials=bass_partials,
                attack_s=0.01,
                decay_s=0.3,
                phase0=rng.uniform(0, 2 * np.pi),
            )
            _add(out, bar_start + int(hit * beat), rng.uniform(0.28, 0.38) * bass)

        t_beats = 0.0
        while t_beats < 4.0:
            length = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            length = min(length, 4.0 - t_beats)
            if rng.random() > 0.15:
                melody_step = int(np.clip(melody_step + rng.integers(-3, 4), 5, 18))
                lead = _tone(
                    _midi_hz(scale_note(melody_step) + 12),
                    int(length * beat),
                    sr,
                    partials=lead_partials,
                    attack_s=0.015,
                    decay_s=0.6,
                    vibrato=rng.uniform(0.1, 0.4),
                    phase0=rng.uniform(0, 2 * np.pi),
                )
                _add(
                    out, bar_start + int(t_beats * beat), lead_gain * rng.uniform(0.22, 0.32) * lead
                )
            t_beats += length

        if rng.random() < drum_prob:
            _add_drums(out, rng, bar_start, beat, sr)
    return out


def _add_drums(
    out: np.ndarray, rng: np.random.Generator, bar_start: int, beat: int, sr: int
) -> None:
    """Kick, snare and hi-hat on a fresh random pattern for one bar, mixed into ``out``."""
    for eighth in range(8):
        at = bar_start + eighth * beat // 2
        if eighth in (0, 4) or rng.random() < 0.15:
            k = int(0.25 * sr)
            t = np.arange(k) / sr
            sweep = 2 * np.pi * np.cumsum(45 + 75 * np.exp(-t / 0.03)) / sr
            _add(out, at, 0.6 * np.sin(sweep) * np.exp(-t / 0.12))
        if eighth in (2, 6) and rng.random() < 0.9:
            k = int(0.18 * sr)
            t = np.arange(k) / sr
            body = 0.5 * rng.standard_normal(k) + 0.4 * np.sin(2 * np.pi * 190 * t)
            _add(out, at, 0.35 * body * np.exp(-t / 0.05))
        if rng.random() < 0.7:
            k = int(0.05 * sr)
            hiss = np.diff(rng.standard_normal(k + 1))  # differenced noise: a crude high-pass
            _add(out, at, 0.08 * hiss * np.exp(-np.arange(k) / sr / 0.012))


# ----------------------------------------------------------------------------------------------
# Helpers


def _normalise(x: np.ndarray, *, rms: float) -> np.ndarray:
    current = float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
    if current == 0.0:
        return x.astype(np.float64)
    y = x * (rms / current)
    peak = float(np.abs(y).max())
    return y * (_PEAK_LIMIT / peak) if peak > _PEAK_LIMIT else y


def _fade(x: np.ndarray, sr: int, *, fade_in_s: float, fade_out_s: float) -> np.ndarray:
    y = np.array(x, dtype=np.float64)
    a = min(len(y), int(fade_in_s * sr))
    b = min(len(y), int(fade_out_s * sr))
    if a:
        y[:a] *= np.linspace(0.0, 1.0, a)
    if b:
        y[len(y) - b :] *= np.linspace(1.0, 0.0, b)
    return y


def _check_durations(*, duration_s: float, intro_s: float) -> None:
    if not duration_s > 0:
        raise ParameterError(f"duration_s must be positive, got {duration_s}")
    if not 0 <= intro_s < duration_s:
        raise ParameterError(f"intro_s must be in [0, duration_s), got {intro_s} for {duration_s}")


def _check_remix(remix: int, bed_db: tuple[float, float], revoice: int = 0) -> None:
    if revoice < 0:
        raise ParameterError(f"revoice must be 0 (the dialogue kept) or more, got {revoice}")
    if remix < 1:
        raise ParameterError(f"remix must be at least 1 (0 is the original), got {remix}")
    low, high = bed_db
    if not -20.0 <= low <= high <= 40.0:
        raise ParameterError(
            f"bed_db must be a range (low, high) within [-20, 40] dB, got {bed_db}"
        )


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")


def _check_format(fmt: str) -> str:
    if fmt not in _ENCODERS:
        raise ParameterError(f"unsupported format {fmt!r}; choose from {', '.join(_ENCODERS)}")
    return fmt


def _require_tool(name: str) -> None:
    if shutil.which(name) is None:
        raise RuntimeError(f"{name} is not installed (apt-get install {name}); it is needed here")
