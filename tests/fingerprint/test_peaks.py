import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import maximum_filter1d

from citywok_pipeline.fingerprint import (
    DEFAULT_PARAMS,
    FingerprintParams,
    ParameterError,
    find_peaks,
    find_peaks_reference,
    spectrogram,
)
from citywok_pipeline.fingerprint.peaks import _window_max
from tests.conftest import tone_music


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_peak_picker_agrees_with_the_naive_reference(seed):
    spec = spectrogram(tone_music(3.0, seed), params=DEFAULT_PARAMS)
    fast = find_peaks(spec, params=DEFAULT_PARAMS)
    slow = find_peaks_reference(spec, params=DEFAULT_PARAMS)
    assert fast.size > 10
    np.testing.assert_array_equal(fast, slow)


def test_reference_agrees_on_random_noise_with_a_denser_setting(rng):
    spec = (rng.standard_normal((80, 60)) * 10).astype(np.float32)
    fast = find_peaks(spec, params=DEFAULT_PARAMS, peaks_per_second=40)
    slow = find_peaks_reference(spec, params=DEFAULT_PARAMS, peaks_per_second=40)
    assert fast.size > 10
    np.testing.assert_array_equal(fast, slow)


def test_a_pure_tone_peaks_at_its_frequency():
    sr = DEFAULT_PARAMS.sample_rate
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * sr) / sr)).astype(np.float32)
    peaks = find_peaks(spectrogram(x, params=DEFAULT_PARAMS), params=DEFAULT_PARAMS)
    lo, _ = DEFAULT_PARAMS.bin_range
    hz = (peaks["f"] + lo) * sr / DEFAULT_PARAMS.n_fft
    assert peaks.size > 0
    assert np.all(np.abs(hz - 1000) < DEFAULT_PARAMS.sample_rate / DEFAULT_PARAMS.n_fft)


def test_silence_has_no_peaks():
    spec = spectrogram(np.zeros(8000, np.float32), params=DEFAULT_PARAMS)
    assert find_peaks(spec, params=DEFAULT_PARAMS).size == 0


def test_peak_density_is_bounded_by_the_setting():
    x = tone_music(20.0, 7) + np.random.default_rng(0).normal(0, 0.05, 160000).astype(np.float32)
    peaks = find_peaks(spectrogram(x, params=DEFAULT_PARAMS), params=DEFAULT_PARAMS)
    per_second = peaks.size / 20.0
    assert (
        0.5 * DEFAULT_PARAMS.peaks_per_second < per_second <= 1.1 * DEFAULT_PARAMS.peaks_per_second
    )


def test_peaks_do_not_depend_on_the_gain():
    x = tone_music(5.0, 3)
    p1 = find_peaks(spectrogram(x, params=DEFAULT_PARAMS), params=DEFAULT_PARAMS)
    p2 = find_peaks(spectrogram(x * 10 ** (-18 / 20), params=DEFAULT_PARAMS), params=DEFAULT_PARAMS)
    np.testing.assert_allclose(p1["t"], p2["t"], atol=1e-3)
    np.testing.assert_allclose(p1["f"], p2["f"], atol=1e-3)


def test_stereo_input_is_refused_with_a_clear_error():
    with pytest.raises(ParameterError, match="mono"):
        spectrogram(np.zeros((2, 1000), np.float32), params=DEFAULT_PARAMS)


def test_invalid_params_are_refused():
    with pytest.raises(ParameterError):
        FingerprintParams(fmax_hz=5000)
    with pytest.raises(ParameterError):
        FingerprintParams(max_dt=100)


@settings(deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(0, 40), st.integers(1, 40)),
        elements=st.floats(-120, 20, width=32),
    ),
    st.sampled_from([1, 3, 5, 13, 21]),
    st.sampled_from([0, 1]),
)
def test_window_maximum_equals_scipys_maximum_filter(x, size, axis):
    want = maximum_filter1d(x, size, axis=axis, mode="constant", cval=-np.inf)
    np.testing.assert_array_equal(_window_max(x, size, axis=axis), want)
