"""The parameters that define a fingerprint index, pinned to every snapshot by a version."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


class ParameterError(ValueError):
    """Raised when a parameter or an argument to the core is invalid."""


@dataclass(frozen=True, kw_only=True)
class FingerprintParams:
    """Everything that decides which hashes an episode produces.

    Two snapshots can be searched together, and a query can be matched against a snapshot,
    only when their params are equal: a snapshot stores its params and refuses others.
    Change ``version`` whenever the algorithm changes in a way the fields don't show.

    Attributes
    ----------
    version : int
        Algorithm version.
    sample_rate : int
        Hz. Audio is decoded to mono at this rate; 8 kHz keeps the telephone band.
    n_fft, hop : int
        STFT window and hop, in samples (64 ms and 16 ms at 8 kHz).
    fmin_hz, fmax_hz : float
        Only peaks inside this band count: 250-3500 Hz survives telephone band-passing.
    peak_time_radius, peak_freq_radius : int
        Half-size of the neighbourhood a peak must dominate, in frames and bins.
    peaks_per_second : float
        Density of landmark peaks kept (the strongest first) on the index side.
    fanout : int
        Pairs formed per anchor peak on the index side.
    max_dt : int
        Largest anchor-to-target distance, in frames (also the Δt field's range).
    max_df : int
        Largest anchor-to-target distance, in bins.
    """

    version: int = 1
    sample_rate: int = 8000
    n_fft: int = 512
    hop: int = 128
    fmin_hz: float = 250.0
    fmax_hz: float = 3500.0
    peak_time_radius: int = 6
    peak_freq_radius: int = 10
    peaks_per_second: float = 14.0
    fanout: int = 4
    max_dt: int = 63
    max_df: int = 96

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop <= 0 or self.n_fft < self.hop:
            raise ParameterError(f"bad STFT settings: {self}")
        if not 0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate / 2:
            raise ParameterError(
                f"band {self.fmin_hz}-{self.fmax_hz} Hz must lie inside 0-{self.sample_rate / 2} Hz"
            )
        if not 1 <= self.max_dt <= 63:
            raise ParameterError("max_dt must be in 1..63 frames (6 bits in the hash)")
        if self.fanout < 1 or self.peaks_per_second <= 0:
            raise ParameterError("fanout and peaks_per_second must be positive")

    @property
    def frame_seconds(self) -> float:
        """Seconds per STFT frame (the unit of every offset in the index)."""
        return self.hop / self.sample_rate

    @property
    def bin_range(self) -> tuple[int, int]:
        """First and one-past-last FFT bin of the searched band."""
        lo = round(self.fmin_hz * self.n_fft / self.sample_rate)
        hi = round(self.fmax_hz * self.n_fft / self.sample_rate) + 1
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FingerprintParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown fingerprint params {sorted(unknown)}")
        return cls(**data)


DEFAULT_PARAMS = FingerprintParams()
