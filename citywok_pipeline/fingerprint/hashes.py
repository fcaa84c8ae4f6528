"""Peak pairs to landmark hashes.

A hash packs (anchor frequency, target frequency, time distance) into one 22-bit integer:
``f1 << 14 | f2 << 6 | dt``, with frequencies in band bins (8 bits) and ``dt`` in frames
(6 bits). Packed integers rather than xxhash64 digests: the information is 22 bits either
way, so a digest only doubles the key size (8 bytes instead of 4) and destroys the
neighbourhood of a key; collisions are impossible with the packed form. See
benchmarks/RESULTS.md for the size comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import FingerprintParams

F_BITS = 8
DT_BITS = 6
HASH_BITS = 2 * F_BITS + DT_BITS


@dataclass(frozen=True)
class Hashes:
    """Landmark hashes of one piece of audio.

    Attributes
    ----------
    keys : np.ndarray, shape (n,), uint32
        Packed hashes (see the module docstring).
    times : np.ndarray, shape (n,), float32
        Anchor time of each hash, in frames from the start of the audio.
    """

    keys: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return int(self.keys.size)


def pack(f1: np.ndarray, f2: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Pack band bins ``f1``, ``f2`` (0..255) and ``dt`` (1..63 frames) into uint32 keys."""
    return (
        (f1.astype(np.uint32) << (F_BITS + DT_BITS))
        | (f2.astype(np.uint32) << DT_BITS)
        | dt.astype(np.uint32)
    )


def unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack`."""
    keys = keys.astype(np.uint32)
    f1 = keys >> (F_BITS + DT_BITS)
    f2 = (keys >> DT_BITS) & ((1 << F_BITS) - 1)
    dt = keys & ((1 << DT_BITS) - 1)
    return f1, f2, dt


def hash_peaks(
    peaks: np.ndarray,
    *,
    params: FingerprintParams,
    fanout: int | None = None,
    time_factor: float = 1.0,
    freq_factor: float = 1.0,
    spread: bool = False,
    time_spread: int = 0,
) -> Hashes:
    """Pair each anchor peak with the next ``fanout`` peaks in its target zone and hash them.

    Parameters
    ----------
    peaks : np.ndarray of PEAK_DTYPE
        From :func:`~citywok_pipeline.fingerprint.peaks.find_peaks`, sorted by time.
    params : FingerprintParams
    fanout : int, optional
        Targets per anchor; ``params.fanout`` by default (queries use more).
    time_factor, freq_factor : float
        Undo a change of the audio before hashing: times are multiplied by ``time_factor``
        and frequencies divided by ``freq_factor``. Audio played 1% fast (resampled: pitch
        follows) hashes with ``time_factor=freq_factor=1.01`` like the original; audio
        pitch-shifted up a semitone at the same tempo with ``freq_factor=2 ** (1 / 12)``;
        audio time-stretched to play 1.25 times faster at the same pitch with
        ``time_factor=1.25``.
    spread : bool
        Also hash each pair with each frequency rounded to its other neighbouring bin (the
        bin on the far side of the peak's sub-bin position): four keys per pair. A query-side
        tolerance of half a bin: a room's early reflections move spectral peaks by a
        fraction of a bin, and a peak near a bin's edge then rounds the other way.

    Returns
    -------
    Hashes
        Sorted by anchor time.
    """
    fanout = params.fanout if fanout is None else fanout
    n = peaks.size
    if n < 2:
        return Hashes(np.zeros(0, np.uint32), np.zeros(0, np.float32))
    t = peaks["t"].astype(np.float64) * time_factor
    # Peaks are in band bins; a frequency factor scales the absolute frequency.
    lo = params.bin_range[0]
    exact = (peaks["f"].astype(np.float64) + lo) / freq_factor - lo
    f = np.rint(exact)
    order = np.argsort(t, kind="stable")
    t, f, exact = t[order], f[order], exact[order]
    # Candidate targets: the next `width` peaks in time; enough to fill the fan-out after
    # the zone filter drops the ones too far away in frequency.
    width = min(n - 1, 8 * fanout)
    j = np.arange(n)[:, None] + np.arange(1, width + 1)[None, :]
    inside = j < n
    j = np.minimum(j, n - 1)
    dt = np.rint(t[j] - t[:, None])
    df = f[j] - f[:, None]
    ok = inside & (dt >= 1) & (dt <= params.max_dt) & (np.abs(df) <= params.max_df)
    ok &= (f[:, None] >= 0) & (f[:, None] < 256) & (f[j] >= 0) & (f[j] < 256)
    ok &= np.cumsum(ok, axis=1) <= fanout
    anchor, col = np.nonzero(ok)
    target = j[anchor, col]
    if not spread and not time_spread:
        return Hashes(pack(f[anchor], f[target], dt[anchor, col]), t[anchor].astype(np.float32))
    other = np.where(exact >= f, f + 1, f - 1)
    f1s = (f[anchor], other[anchor]) if spread else (f[anchor],)
    f2s = (f[target], other[target]) if spread else (f[target],)
    d0 = dt[anchor, col]
    keys, times = [], []
    for f1 in f1s:
        for f2 in f2s:
            for shift in range(-time_spread, time_spread + 1):
                d = d0 + shift
                ok = (f1 >= 0) & (f1 < 256) & (f2 >= 0) & (f2 < 256) & (d >= 1)
                ok &= d <= params.max_dt
                keys.append(pack(f1[ok], f2[ok], d[ok]))
                times.append(t[anchor][ok])
    at = np.concatenate(times)
    by_time = np.argsort(at, kind="stable")
    return Hashes(np.concatenate(keys)[by_time], at[by_time].astype(np.float32))
