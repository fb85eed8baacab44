"""The scene sample's windows (csakd_qgis/fusion/sample.py)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from csakd_qgis.fusion.sample import SAMPLE_GRID, SAMPLE_SIZE, _axis_windows


@given(st.integers(min_value=1, max_value=5000))
def test_axis_windows_never_overlap_and_cover_a_short_axis(size):
    windows = _axis_windows(size)
    assert 1 <= len(windows) <= SAMPLE_GRID and all(1 <= length <= SAMPLE_SIZE for _, length in windows)
    covered = np.zeros(size, int)
    for start, length in windows:
        assert 0 <= start and start + length <= size
        covered[start:start + length] += 1
    assert covered.max() == 1  # no pixel counted twice
    if size <= SAMPLE_GRID * SAMPLE_SIZE:
        assert covered.min() == 1  # a short axis is sampled whole


def test_the_indian_pines_strip_is_read_once():
    # 36 LR columns used to give four 32-px windows at 0, 1, 3, 4: 128 columns read for 36
    assert _axis_windows(36) == [(0, 18), (18, 18)]
    assert _axis_windows(1000) == [(0, 32), (323, 32), (645, 32), (968, 32)]
