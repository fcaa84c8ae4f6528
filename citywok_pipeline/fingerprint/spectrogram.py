"""Short-time log-magnitude spectrogram of the searched band."""

from __future__ import annotations

import ducc0.fft
import numpy as np

from .params import FingerprintParams, ParameterError

# Below this (dB, for full-scale float audio through a Hann window) a bin is silence, not a peak.
SILENCE_DB = -60.0


def spectrogram(samples: np.ndarray, *, params: FingerprintParams) -> np.ndarray:
    """Log-magnitude STFT of ``samples`` restricted to ``params.bin_range``.

    Parameters
    ----------
    samples : np.ndarray, shape (n,), float32
        Mono audio at ``params.sample_rate``, in [-1, 1].
    params : FingerprintParams

    Returns
    -------
    np.ndarray, shape (n_frames, n_band_bins), float32
        Magnitude in dB; frame ``t`` covers samples ``[t * hop, t * hop + n_fft)``.
        Audio shorter than one window gives zero frames.
    """
    if samples.ndim != 1:
        raise ParameterError(f"expected mono audio of shape (n,), got shape {samples.shape}")
    x = np.asarray(samples, dtype=np.float32)
    lo, hi = params.bin_range
    if x.size < params.n_fft:
        return np.zeros((0, hi - lo), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, params.n_fft)[:: params.hop]
    window = np.hanning(params.n_fft).astype(np.float32)
    # ducc0 is pocketfft's successor (scipy.fft's engine, as fast in float32), without
    # scipy.fft's import: that pulls in scipy.special and scipy's array-API layer, a
    # quarter of a second of every one-shot `citywok match`. numpy.fft computes float32 in
    # float64, which made this function twice as slow.
    spec = ducc0.fft.r2c(frames * window, axes=(1,))[:, lo:hi]
    power = spec.real * spec.real + spec.imag * spec.imag
    # 10*log10(power) with a floor: silence becomes a flat plateau below SILENCE_DB.
    return (10.0 * np.log10(np.maximum(power, 1e-10))).astype(np.float32)
