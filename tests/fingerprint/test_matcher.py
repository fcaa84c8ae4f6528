"""The matcher's vectorised scoring helpers against the plain definitions they replace."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from citywok_pipeline.fingerprint.matcher import _windows


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
