"""The matcher: its vectorised scoring helpers against the plain definitions they replace,
and which passes a clip goes through."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import resample_poly

from citywok_pipeline.demo.library import SAMPLE_RATE, render_episode_samples
from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.fingerprint.hashes import hash_peaks
from citywok_pipeline.fingerprint.index import MemoryIndex
from citywok_pipeline.fingerprint.matcher import (
    DEFAULT_MATCH_PARAMS,
    MatchParams,
    _windows,
    fingerprint,
    match_samples,
)
from citywok_pipeline.fingerprint.params import ParameterError
from citywok_pipeline.fingerprint.peaks import find_peaks
from citywok_pipeline.fingerprint.records import Episode
from citywok_pipeline.fingerprint.spectrogram import spectrogram


@given(
    st.lists(st.integers(-(2**40), 2**40), max_size=300, unique=True).map(sorted),
    st.integers(0, 4),
)
def test_cell_windows_equal_binary_searches_over_sorted_distinct_cells(values, tolerance):
    cells = np.array(values, dtype=np.int64)
    lo, hi = _windows(cells, tolerance)
    np.testing.assert_array_equal(lo, np.searchsorted(cells, cells - tolerance, side="left"))
    np.testing.assert_array_equal(hi, np.searchsorted(cells, cells + tolerance, side="right"))


@given(st.integers(0, 2**20), st.integers(1, 40), st.integers(0, 4))
def test_cell_windows_of_a_dense_run(start, length, tolerance):
    # Consecutive cells: every window is as wide as the run allows.
    cells = np.arange(start, start + length, dtype=np.int64)
    lo, hi = _windows(cells, tolerance)
    i = np.arange(length)
    np.testing.assert_array_equal(lo, np.maximum(i - tolerance, 0))
    np.testing.assert_array_equal(hi, np.minimum(i + tolerance + 1, length))


# The passes: a quick one settles a clip of one episode; shared audio, and a clip a little
# short of evidence, take the index's whole fingerprint.

INTRO_S, DURATION_S = 8.0, 40.0


@pytest.fixture(scope="module")
def show() -> tuple[MemoryIndex, list[np.ndarray]]:
    """Two episodes of one show (music only: no espeak-ng needed), the same theme first."""
    audio = [
        resample_poly(
            render_episode_samples(
                show_index=0,
                season=1,
                episode=e,
                duration_s=DURATION_S,
                intro_s=INTRO_S,
                seed=3,
                speech=False,
            ),
            DEFAULT_PARAMS.sample_rate,
            SAMPLE_RATE,
        ).astype(np.float32)
        for e in (1, 2)
    ]
    episodes = [
        Episode(episode_id=f"show-s01e0{e}", season="show-s01", duration_s=DURATION_S)
        for e in (1, 2)
    ]
    hashes = [fingerprint(x, params=DEFAULT_PARAMS) for x in audio]
    return MemoryIndex(DEFAULT_PARAMS, episodes, hashes), audio


def _hashes(clip: np.ndarray, *, peaks_per_second: float | None, fanout: int) -> int:
    spec = spectrogram(clip, params=DEFAULT_PARAMS)
    peaks = find_peaks(spec, params=DEFAULT_PARAMS, peaks_per_second=peaks_per_second)
    return len(hash_peaks(peaks, params=DEFAULT_PARAMS, fanout=fanout))


def test_a_clip_of_one_episode_is_settled_by_the_quick_pass(show) -> None:
    index, audio = show
    rate = DEFAULT_PARAMS.sample_rate
    clip = audio[1][20 * rate : 25 * rate]
    result = match_samples(clip, index)
    assert not result.ambiguous
    assert [m.episode_id for m in result.matches] == ["show-s01e02"]
    assert result.matches[0].offset_s == pytest.approx(20.0, abs=0.05)
    # Only the quick pass ran: the index's peaks, half its fan-out.
    quick = _hashes(clip, peaks_per_second=None, fanout=DEFAULT_MATCH_PARAMS.quick_fanout)
    assert DEFAULT_MATCH_PARAMS.quick_fanout < DEFAULT_PARAMS.fanout
    assert result.query_hashes == quick


def test_shared_audio_goes_on_to_the_index_fingerprint_and_names_every_episode(show) -> None:
    index, audio = show
    rate = DEFAULT_PARAMS.sample_rate
    clip = audio[0][2 * rate : 6 * rate]  # inside the theme both episodes start with
    result = match_samples(clip, index)
    assert result.ambiguous
    assert {m.episode_id for m in result.matches} == {"show-s01e01", "show-s01e02"}
    # The quick pass found two episodes close together; the clip fingerprinted exactly like
    # the index (its whole fan-out) settled it, without the dense passes.
    whole = _hashes(clip, peaks_per_second=None, fanout=DEFAULT_PARAMS.fanout)
    assert result.query_hashes == whole


@pytest.mark.parametrize(
    "field", ["quick_fanout", "fanout", "quick_hits_per_hash", "hits_per_hash"]
)
def test_a_fanout_or_hit_budget_below_one_is_a_parameter_error(field: str) -> None:
    with pytest.raises(ParameterError, match=field):
        MatchParams(**{field: 0})


def test_clips_short_of_evidence_are_settled_by_the_index_fingerprint_before_the_dense_pass(
    show,
) -> None:
    index, audio = show
    rate = DEFAULT_PARAMS.sample_rate
    settled = []
    for start in range(10, 38):  # past the shared theme: one episode's audio
        clip = audio[1][start * rate : (start + 1) * rate]  # 1 s: little evidence
        quick = _hashes(clip, peaks_per_second=None, fanout=DEFAULT_MATCH_PARAMS.quick_fanout)
        whole = _hashes(clip, peaks_per_second=None, fanout=DEFAULT_PARAMS.fanout)
        result = match_samples(clip, index)
        if result.query_hashes == whole > quick:  # the quick pass, then the whole fingerprint
            assert not result.ambiguous
            assert result.matches[0].episode_id == "show-s01e02"
            assert result.matches[0].offset_s == pytest.approx(start, abs=0.05)
            settled.append(start)
    assert settled
