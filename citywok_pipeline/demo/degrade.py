"""Degradations a query clip suffers between a TV and the matcher: noise, codecs, phones, rooms,
and the changes of speed, pitch and tempo that broadcasts, re-uploads and players make.

Each function takes and returns mono float32 audio at the caller's sample rate, and keeps the
clip aligned with its source (sample 0 stays sample 0), so a benchmark can check the offset the
matcher reports as well as the episode. :data:`DEGRADATIONS` holds the named presets and
:data:`CHANGES` says how the ones that change speed, pitch or tempo change them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt, sosfiltfilt

from citywok_pipeline.fingerprint.params import ParameterError

Degradation = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def cut(samples: np.ndarray, sr: int, *, start_s: float, duration_s: float) -> np.ndarray:
    """The clip ``[start_s, start_s + duration_s)`` of ``samples``.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio, shape ``(n,)``.
    sr : int
        Sample rate in Hz.
    start_s, duration_s : float
        Where the clip starts and how long it is, in seconds; it must lie inside ``samples``.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(duration_s * sr),)``.
    """
    x = _check(samples, sr)
    start = round(start_s * sr)
    n = round(duration_s * sr)
    if start < 0 or n <= 0 or start + n > len(x):
        raise ParameterError(
            f"cut [{start_s}, {start_s + duration_s}) s lies outside the {len(x) / sr:.3f} s input"
        )
    return x[start : start + n].copy()


def white_noise(
    samples: np.ndarray, sr: int, *, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Add Gaussian white noise at ``snr_db`` below the clip's mean power.

    The noise is scaled to the exact target power (not just its expectation), so the SNR
    measured on the result is ``snr_db`` to within float rounding. Not clipped: a microphone
    in a noisy room records the sum.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``.
    """
    x = _check(samples, sr).astype(np.float64)
    signal_power = float(np.mean(np.square(x)))
    if signal_power == 0.0:
        raise ParameterError("white_noise needs a clip that is not silent (SNR is undefined)")
    noise = rng.standard_normal(len(x))
    noise -= noise.mean()
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / np.mean(np.square(noise)))
    return (x + noise).astype(np.float32)


def mp3(samples: np.ndarray, sr: int, *, bitrate_kbps: int = 32) -> np.ndarray:
    """Round trip through ffmpeg's libmp3lame at ``bitrate_kbps``, back to ``sr``.

    Through pipes ffmpeg cannot write the LAME header that records the encoder delay, so the
    decoded audio starts late by a fixed number of samples; that delay is measured once per
    ``(sr, bitrate_kbps)`` on a noise burst and cut off, keeping the output sample-aligned.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``.
    """
    x = _check(samples, sr)
    if bitrate_kbps <= 0:
        raise ParameterError(f"bitrate_kbps must be positive, got {bitrate_kbps}")
    delay = _mp3_delay(sr, bitrate_kbps)
    y = _mp3_round_trip(x, sr, bitrate_kbps)[delay : delay + len(x)]
    # The decoder can stop a few samples short of the padded input; silence stands in for them.
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def telephone(samples: np.ndarray, sr: int) -> np.ndarray:
    """A G.711 phone line: 300-3400 Hz band-pass, 8 kHz mu-law, band-pass, back to ``sr``.

    The filters are zero-phase (forward-backward) and the resamplers linear-phase and
    centred, so the line adds no delay: offsets measured on the result stay those of the input.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``.
    """
    x = _check(samples, sr).astype(np.float64)
    if sr < 2 * 3400:
        raise ParameterError(f"telephone needs sr of at least 6800 Hz, got {sr}")
    line_rate = 8000
    band = butter(6, [300.0, 3400.0], btype="bandpass", fs=line_rate, output="sos")
    g = gcd(sr, line_rate)
    up, down = line_rate // g, sr // g
    narrow = sosfiltfilt(band, resample_poly(x, up, down))
    narrow = _mu_law_decode(_mu_law_encode(narrow))
    # The receiving handset filters again, removing the quantisation noise outside the band.
    narrow = sosfiltfilt(band, narrow)
    y = resample_poly(narrow, down, up)
    return _fit_length(y, len(x)).astype(np.float32)


def reverb(
    samples: np.ndarray,
    sr: int,
    *,
    rng: np.random.Generator,
    rt60_s: float = 0.4,
    wet: float = 0.4,
) -> np.ndarray:
    """A room: the direct sound, an exponentially decaying noise tail and one discrete echo.

    The impulse response is a unit impulse at t=0 (so the clip stays aligned), then, from
    5 ms, Gaussian noise whose envelope falls 60 dB in ``rt60_s``, plus an echo between
    50 and 150 ms; the tail is scaled to unit energy and carries the share ``wet`` of the
    output's energy.

    Parameters
    ----------
    rng : np.random.Generator
        Draws the tail's noise and the echo's delay and strength.
    rt60_s : float
        Reverberation time in seconds, positive.
    wet : float
        Share of the output's energy that is reverberant, in ``[0, 1]``.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``.
    """
    x = _check(samples, sr).astype(np.float64)
    if rt60_s <= 0 or not 0.0 <= wet <= 1.0:
        raise ParameterError(f"need rt60_s > 0 and 0 <= wet <= 1, got {rt60_s} and {wet}")
    n = int(rt60_s * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)  # ln(1000): -60 dB at rt60_s
    tail[: int(0.005 * sr)] = 0.0
    echo_at = int(rng.uniform(0.05, 0.15) * sr)
    if echo_at < n:
        tail[echo_at] += rng.uniform(0.4, 0.7) * np.sqrt(np.sum(np.square(tail)))
    tail /= np.sqrt(np.sum(np.square(tail)))
    wet_signal = fftconvolve(x, tail)[: len(x)]
    # Mixed by energy, not amplitude: the dry and reverberant parts are nearly uncorrelated,
    # so the clip keeps its loudness whatever ``wet`` is, as a room's recording would.
    return (np.sqrt(1.0 - wet) * x + np.sqrt(wet) * wet_signal).astype(np.float32)


def gain(samples: np.ndarray, sr: int, *, db: float) -> np.ndarray:
    """Scale by ``db`` decibels; a boost saturates at full scale, as a real converter does.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``; never renormalised, so -18 dB stays 18 dB down.
    """
    y = _check(samples, sr).astype(np.float64) * 10 ** (db / 20)
    if db > 0:
        y = np.clip(y, -1.0, 1.0)
    return y.astype(np.float32)


def speed(samples: np.ndarray, sr: int, *, factor: float) -> np.ndarray:
    """Play ``factor`` times faster, pitch and tempo together (a PAL speed-up, a fast tape).

    Parameters
    ----------
    factor : float
        Speed ratio in ``[0.5, 2]``; 1.01 is 1 % faster: a 1000 Hz tone comes out at 1010 Hz
        and the clip is 1 % shorter. Approximated by a fraction with denominator <= 1000.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(n / factor),)``.
    """
    x = _check(samples, sr).astype(np.float64)
    if not 0.5 <= factor <= 2.0:
        raise ParameterError(f"speed factor must be in [0.5, 2], got {factor}")
    ratio = Fraction(factor).limit_denominator(1000)
    # Played `factor` faster then sampled at sr: `factor` input samples per output sample.
    y = resample_poly(x, ratio.denominator, ratio.numerator)
    return _fit_length(y, round(len(x) / factor)).astype(np.float32)


def pitch_shift(samples: np.ndarray, sr: int, *, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones`` at the same tempo (ffmpeg's ``rubberband`` filter), as a
    re-upload does to dodge content matching.

    The filter's output lags its input by less than 20 ms (measured on noise bursts), well
    inside the matcher's offset tolerance, so the clip is not re-aligned.

    Parameters
    ----------
    semitones : float
        In ``[-12, 12]``; +1 raises every frequency by ``2 ** (1 / 12)``, about 5.9 %.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``.
    """
    x = _check(samples, sr)
    if not -12.0 <= semitones <= 12.0:
        raise ParameterError(f"semitones must be in [-12, 12], got {semitones}")
    y = _ffmpeg_filter(x, sr, f"rubberband=pitch={2.0 ** (semitones / 12.0):.6f}")
    return _fit_length(y, len(x)).astype(np.float32)


def tempo(samples: np.ndarray, sr: int, *, factor: float, method: str = "atempo") -> np.ndarray:
    """Play ``factor`` times faster at the same pitch (a player's 1.25x, a sped-up short).

    Parameters
    ----------
    factor : float
        In ``[0.5, 2]``; 1.25 makes the clip a fifth shorter.
    method : str
        ``atempo`` (ffmpeg's WSOLA time stretch, what players use) or ``rubberband`` (a phase
        vocoder). Either lags its input by less than 35 ms, so the clip is not re-aligned.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(n / factor),)``.
    """
    x = _check(samples, sr)
    if not 0.5 <= factor <= 2.0:
        raise ParameterError(f"tempo factor must be in [0.5, 2], got {factor}")
    if method not in ("atempo", "rubberband"):
        raise ParameterError(f"tempo method must be atempo or rubberband, got {method!r}")
    spec = f"atempo={factor:.6f}" if method == "atempo" else f"rubberband=tempo={factor:.6f}"
    return _fit_length(_ffmpeg_filter(x, sr, spec), round(len(x) / factor)).astype(np.float32)


def room_impulse_response(sr: int, *, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A living room's impulse response, made up: the direct sound, early reflections, a tail.

    The direct sound is a unit impulse at t=0 (so a clip stays aligned). Six early reflections
    (walls, floor, ceiling, the TV stand) arrive between 2 and 40 ms with gains 0.25-0.7, each
    smaller than the last, half of them inverted. From 5 ms a diffuse tail of Gaussian noise
    decays 60 dB in ``rt60_s``, losing its highs faster than its lows (walls and air absorb
    them): the tail is low-passed more strongly as it goes on, by a mix of a bright and a dull
    copy. Its level gives a direct-to-reverberant ratio between -3 and +3 dB: a phone a metre
    or two from the set, about the critical distance of such a room.

    Returns
    -------
    np.ndarray
        float64, shape ``(round(1.2 * rt60_s * sr),)``.
    """
    if rt60_s <= 0:
        raise ParameterError(f"rt60_s must be positive, got {rt60_s}")
    n = round(1.2 * rt60_s * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)  # ln(1000): -60 dB at rt60_s
    if sr > 2 * 2500:
        dull = sosfilt(butter(2, 2500.0, fs=sr, output="sos"), tail)
        fade = np.clip(t / rt60_s, 0.0, 1.0)
        tail = (1.0 - fade) * tail + fade * dull
    tail[: int(0.005 * sr)] = 0.0
    tail *= np.sqrt(10 ** (-rng.uniform(-3.0, 3.0) / 10) / np.sum(np.square(tail)))
    ir = tail
    ir[0] = 1.0
    delays = np.sort(rng.uniform(0.002, 0.040, 6))
    gains = np.sort(rng.uniform(0.25, 0.7, 6))[::-1] * rng.choice([-1.0, 1.0], 6)
    for d, g in zip(delays, gains, strict=True):
        ir[max(1, round(d * sr))] += g
    return ir


def loudspeaker_room(
    samples: np.ndarray,
    sr: int,
    *,
    rng: np.random.Generator,
    rt60_s: tuple[float, float] = (0.3, 0.8),
    snr_db: tuple[float, float] = (10.0, 15.0),
) -> np.ndarray:
    """A phone recording a TV's loudspeaker across a room.

    The loudspeaker and the phone's microphone pass 150-7000 Hz (a 4th-order zero-phase
    band-pass; at rates where 7000 Hz is past Nyquist, only the high-pass); the room adds
    :func:`room_impulse_response` with an RT60 drawn from ``rt60_s``; the room's own noise
    (pink, like ventilation and traffic, with a little mains hum) is added at an SNR drawn from
    ``snr_db``.

    Returns
    -------
    np.ndarray
        float32, same shape as ``samples``.
    """
    x = _check(samples, sr).astype(np.float64)
    if np.mean(np.square(x)) == 0.0:
        raise ParameterError("loudspeaker_room needs a clip that is not silent (SNR is undefined)")
    hi = 7000.0 if sr > 2 * 7000.0 * 1.05 else None
    band = (
        butter(4, [150.0, hi], btype="bandpass", fs=sr, output="sos")
        if hi
        else butter(4, 150.0, btype="highpass", fs=sr, output="sos")
    )
    y = sosfiltfilt(band, x)
    ir = room_impulse_response(sr, rt60_s=float(rng.uniform(*rt60_s)), rng=rng)
    y = fftconvolve(y, ir)[: len(x)]
    y *= np.sqrt(np.mean(np.square(x)) / np.mean(np.square(y)))  # the phone's level control
    noise = _pink_noise(len(x), rng)
    t = np.arange(len(x)) / sr
    noise += 0.1 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
    noise *= np.sqrt(
        np.mean(np.square(y)) / 10 ** (rng.uniform(*snr_db) / 10) / np.mean(np.square(noise))
    )
    return (y + noise).astype(np.float32)


DEGRADATIONS: dict[str, Degradation] = {
    "clean": lambda x, sr, rng: _check(x, sr).copy(),
    "noise_10db": lambda x, sr, rng: white_noise(x, sr, snr_db=10.0, rng=rng),
    "noise_0db": lambda x, sr, rng: white_noise(x, sr, snr_db=0.0, rng=rng),
    "mp3_32k": lambda x, sr, rng: mp3(x, sr, bitrate_kbps=32),
    "telephone": lambda x, sr, rng: telephone(x, sr),
    "reverb": lambda x, sr, rng: reverb(x, sr, rng=rng),
    "gain_-18db": lambda x, sr, rng: gain(x, sr, db=-18.0),
    "speed_+1pct": lambda x, sr, rng: speed(x, sr, factor=1.01),
    "speed_+2pct": lambda x, sr, rng: speed(x, sr, factor=1.02),
    "speed_-2pct": lambda x, sr, rng: speed(x, sr, factor=0.98),
    "speed_+4.17pct": lambda x, sr, rng: speed(x, sr, factor=25 / 24),
    "speed_-4pct": lambda x, sr, rng: speed(x, sr, factor=0.96),
    "pitch_+1st": lambda x, sr, rng: pitch_shift(x, sr, semitones=1.0),
    "pitch_-1st": lambda x, sr, rng: pitch_shift(x, sr, semitones=-1.0),
    "tempo_1.25x": lambda x, sr, rng: tempo(x, sr, factor=1.25),
    "tempo_0.8x": lambda x, sr, rng: tempo(x, sr, factor=0.8),
    "loudspeaker_room": lambda x, sr, rng: loudspeaker_room(x, sr, rng=rng),
}
"""Named presets, each ``f(samples, sr, rng) -> samples``. The usual degradations first (noise,
codec, phone line, reverb, gain), then the changes of speed, pitch and tempo (:data:`CHANGES`),
then a loudspeaker in a room."""

CHANGES: dict[str, tuple[float, float, float]] = {
    "speed_+1pct": (1.01, 0.0, 1.0),
    "speed_+2pct": (1.02, 0.0, 1.0),
    "speed_-2pct": (0.98, 0.0, 1.0),
    "speed_+4.17pct": (25 / 24, 0.0, 1.0),
    "speed_-4pct": (0.96, 0.0, 1.0),
    "pitch_+1st": (1.0, 1.0, 1.0),
    "pitch_-1st": (1.0, -1.0, 1.0),
    "tempo_1.25x": (1.0, 0.0, 1.25),
    "tempo_0.8x": (1.0, 0.0, 0.8),
}
"""``(speed, pitch in semitones, tempo)`` of the presets that change them (the others keep
``(1, 0, 1)``), as :class:`~citywok_pipeline.fingerprint.records.Match` reports them; a clip
plays ``speed * tempo`` times as fast as its source."""


# ----------------------------------------------------------------------------------------------
# Helpers


def _check(samples: np.ndarray, sr: int) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ParameterError(f"expected mono audio of shape (n,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ParameterError(f"expected float audio, got {x.dtype}")
    if sr <= 0:
        raise ParameterError(f"sample rate must be positive, got {sr}")
    return x.astype(np.float32, copy=False)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power falling 3 dB per octave (1/f), unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    spectrum /= np.sqrt(np.maximum(f, 1.0))
    y = np.fft.irfft(spectrum, n)
    return y / np.std(y)


def _ffmpeg_filter(x: np.ndarray, sr: int, spec: str) -> np.ndarray:
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(sr), "-ac", "1",
        "-i", "pipe:0", "-af", spec, "-ar", str(sr), "-ac", "1", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    return np.frombuffer(_run(cmd, np.ascontiguousarray(x, dtype="<f4").tobytes()), dtype="<f4")


def _mu_law_encode(x: np.ndarray, mu: int = 255) -> np.ndarray:
    x = np.clip(x, -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.round((companded + 1) / 2 * mu).astype(np.uint8)


def _mu_law_decode(code: np.ndarray, mu: int = 255) -> np.ndarray:
    companded = code.astype(np.float64) / mu * 2 - 1
    return np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(mu)) / mu


def _mp3_round_trip(x: np.ndarray, sr: int, bitrate_kbps: int) -> np.ndarray:
    # LAME takes only the MPEG rates; others go through the nearest one and come back to sr.
    rate = min(_MP3_RATES, key=lambda r: abs(r - sr))
    encode = [
        "ffmpeg", "-nostdin", "-v", "error",
        "-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
        "-ar", str(rate), "-c:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-f", "mp3", "pipe:1",
    ]  # fmt: skip
    decode = [
        "ffmpeg", "-nostdin", "-v", "error", "-f", "mp3", "-i", "pipe:0",
        "-ac", "1", "-ar", str(sr), "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    encoded = _run(encode, np.ascontiguousarray(x, dtype="<f4").tobytes())
    return np.frombuffer(_run(decode, encoded), dtype="<f4")


@lru_cache(maxsize=32)
def _mp3_delay(sr: int, bitrate_kbps: int) -> int:
    """Samples the decoded mp3 lags its input (1105 at MPEG rates with ffmpeg 5, LAME 3.100)."""
    rng = np.random.default_rng(0)
    burst = np.zeros(2 * sr, dtype=np.float32)
    start = sr // 2
    probe = (0.1 * rng.standard_normal(sr // 2)).astype(np.float32)
    burst[start : start + len(probe)] = probe
    y = _mp3_round_trip(burst, sr, bitrate_kbps).astype(np.float64)
    scores = fftconvolve(y, probe[::-1].astype(np.float64), mode="valid")
    return int(np.argmax(scores)) - start


def _run(cmd: list[str], data: bytes) -> bytes:
    result = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout
