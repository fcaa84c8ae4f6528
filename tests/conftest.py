import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS


def tone_music(
    duration_s: float, seed: int, sample_rate: int = DEFAULT_PARAMS.sample_rate
) -> np.ndarray:
    """Seeded random notes: a cheap stand-in for music in fast unit tests."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    x = np.zeros(n, np.float32)
    for _ in range(int(duration_s * 6)):
        start = int(rng.uniform(0, duration_s - 0.3) * sample_rate)
        length = int(rng.uniform(0.1, 0.6) * sample_rate)
        f = rng.uniform(250, 3400)
        note = np.sin(2 * np.pi * f * t[:length]) * np.hanning(length) * rng.uniform(0.05, 0.3)
        x[start : start + length] += note[: n - start].astype(np.float32)
    return x


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
