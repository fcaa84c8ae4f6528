"""Landmark peaks: local maxima of the spectrogram, thinned to a steady density.

`find_peaks` is the vectorised kernel; `find_peaks_reference` is a deliberately naive
implementation of the same definition, kept to test the fast one against.

Definition. A cell ``(t, f)`` of the dB spectrogram ``S`` is a candidate when it is louder
than ``SILENCE_DB`` and no cell within ``±time_radius`` frames and ``±freq_radius`` bins is
louder (ties count as maxima). A candidate is kept when fewer than ``k`` other candidates
within ``±window`` frames are strictly louder, with ``k = round(peaks_per_second * (2 *
window + 1) * frame_seconds)``: a sliding top-k that, unlike fixed one-second buckets,
does not depend on where a clip starts.
"""

from __future__ import annotations

import numpy as np

from .params import FingerprintParams
from .spectrogram import SILENCE_DB

PEAK_DTYPE = np.dtype([("t", np.float32), ("f", np.float32), ("mag", np.float32)])


def _density(params: FingerprintParams, peaks_per_second: float | None) -> tuple[int, int]:
    rate = params.peaks_per_second if peaks_per_second is None else peaks_per_second
    window = max(1, round(0.5 / params.frame_seconds))
    k = max(1, round(rate * (2 * window + 1) * params.frame_seconds))
    return window, k


def _window_max(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Maximum over a centred window of odd ``size`` along ``axis``, ``-inf`` past the ends.

    The same values as ``scipy.ndimage.maximum_filter1d(x, size, axis, mode="constant",
    cval=-inf)``, several times faster on spectrogram-sized arrays: maxima over windows of
    1, 2, 4, ... cells are built by doubling, and two overlapping windows of the largest
    power of two cover any window (a maximum does not mind counting a cell twice).
    """
    n = x.shape[axis]
    r = size // 2
    pad_shape = list(x.shape)
    pad_shape[axis] = r
    pad = np.full(pad_shape, -np.inf, dtype=x.dtype)
    m = np.concatenate([pad, x, pad], axis=axis)  # max over windows of `width` cells

    def cells(a: np.ndarray, start: int, stop: int) -> np.ndarray:
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return a[tuple(index)]

    width = 1
    while 2 * width <= size:
        length = m.shape[axis]
        m = np.maximum(cells(m, 0, length - width), cells(m, width, length))
        width *= 2
    return np.maximum(cells(m, 0, n), cells(m, size - width, size - width + n))


def _interpolate(spec: np.ndarray, t: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-cell peak position by a parabola through each axis' neighbours."""

    def offset(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
        denom = left - 2.0 * mid + right
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
        return np.clip(d, -0.5, 0.5)

    n_t, n_f = spec.shape
    tl, tr = np.maximum(t - 1, 0), np.minimum(t + 1, n_t - 1)
    fl, fr = np.maximum(f - 1, 0), np.minimum(f + 1, n_f - 1)
    mid = spec[t, f]
    dt = offset(spec[tl, f], mid, spec[tr, f])
    df = offset(spec[t, fl], mid, spec[t, fr])
    return t + dt, f + df


def _thin(t: np.ndarray, mag: np.ndarray, window: int, k: int) -> np.ndarray:
    """Mask of candidates with fewer than ``k`` strictly louder candidates within ±window."""
    n = t.size
    if n == 0:
        return np.zeros(0, dtype=bool)
    lo = np.searchsorted(t, t - window, side="left")
    hi = np.searchsorted(t, t + window, side="right")
    width = int((hi - lo).max())
    idx = lo[:, None] + np.arange(width)[None, :]
    inside = idx < hi[:, None]
    neighbour_mag = mag[np.minimum(idx, n - 1)]
    louder = inside & (neighbour_mag > mag[:, None])
    return louder.sum(axis=1) < k


def find_peaks(
    spec: np.ndarray,
    *,
    params: FingerprintParams,
    peaks_per_second: float | None = None,
) -> np.ndarray:
    """Landmark peaks of a dB spectrogram (see the module docstring for the definition).

    Parameters
    ----------
    spec : np.ndarray, shape (n_frames, n_bins), float32
        From :func:`spectrogram`.
    params : FingerprintParams
    peaks_per_second : float, optional
        Density to keep; defaults to ``params.peaks_per_second`` (queries use a higher one).

    Returns
    -------
    np.ndarray of PEAK_DTYPE, shape (n_peaks,)
        Sorted by time then frequency; ``t`` in frames and ``f`` in band bins, both refined
        to sub-cell precision; ``mag`` in dB.
    """
    if spec.size == 0:
        return np.zeros(0, dtype=PEAK_DTYPE)
    local_max = _window_max(
        _window_max(spec, 2 * params.peak_freq_radius + 1, axis=1),
        2 * params.peak_time_radius + 1,
        axis=0,
    )
    t, f = np.nonzero((spec == local_max) & (spec > SILENCE_DB))
    mag = spec[t, f]
    window, k = _density(params, peaks_per_second)
    keep = _thin(t, mag, window, k)
    t, f, mag = t[keep], f[keep], mag[keep]
    tf, ff = _interpolate(spec, t, f)
    out = np.empty(t.size, dtype=PEAK_DTYPE)
    out["t"], out["f"], out["mag"] = tf, ff, mag
    return out


def find_peaks_reference(
    spec: np.ndarray,
    *,
    params: FingerprintParams,
    peaks_per_second: float | None = None,
) -> np.ndarray:
    """Naive loop implementation of :func:`find_peaks`, for tests only (slow)."""
    n_t, n_f = spec.shape
    rt, rf = params.peak_time_radius, params.peak_freq_radius
    cand: list[tuple[int, int, float]] = []
    for t in range(n_t):
        for f in range(n_f):
            v = float(spec[t, f])
            if v <= SILENCE_DB:
                continue
            block = spec[max(0, t - rt) : t + rt + 1, max(0, f - rf) : f + rf + 1]
            if v >= float(block.max()):
                cand.append((t, f, v))
    window, k = _density(params, peaks_per_second)
    kept = []
    for t, f, v in cand:
        louder = sum(1 for t2, _, v2 in cand if abs(t2 - t) <= window and v2 > v)
        if louder < k:
            kept.append((t, f, v))
    if not kept:
        return np.zeros(0, dtype=PEAK_DTYPE)
    t_arr = np.array([p[0] for p in kept])
    f_arr = np.array([p[1] for p in kept])
    tf, ff = _interpolate(spec, t_arr, f_arr)
    out = np.empty(len(kept), dtype=PEAK_DTYPE)
    out["t"], out["f"], out["mag"] = tf, ff, [p[2] for p in kept]
    return out
