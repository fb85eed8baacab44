"""In-memory sub-pixel translation (csakd_qgis.geo.translate): exactness, nodata, edges."""

import numpy as np
import pytest

from csakd_qgis.geo.translate import edge_indexes, outside_footprint, split_shift, taps, translate


def test_split_shift_keeps_the_fraction_in_zero_one():
    assert split_shift(1.25) == (1, 0.25)
    assert split_shift(-0.25) == (-1, 0.75)
    assert split_shift(0.0) == (0, 0.0)


@pytest.mark.parametrize("fx, fy", [(0.0, 0.0), (0.3, 0.8), (0.97, 0.03)])
def test_a_quadratic_surface_moves_exactly(fx, fy):
    # Keys' a = -0.5 kernel reproduces polynomials up to degree 2, and its weights sum to 1
    assert taps(fx).sum() == pytest.approx(1.0)
    y, x = np.mgrid[0:13, 0:15].astype(np.float64)

    def surface(x, y):
        return 0.5 + 0.1 * x - 0.05 * y + 0.01 * x * y + 0.002 * x**2

    padded = np.stack([surface(x, y), 2.0 * surface(x, y)]).astype(np.float32)
    out = translate(padded, fx, fy, np.ones(2, bool))
    yy, xx = np.mgrid[0:10, 0:12].astype(np.float64)
    expected = surface(xx + 1 + fx, yy + 1 + fy)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    np.testing.assert_allclose(out[1], 2 * expected, rtol=1e-5)


def test_invalid_pixels_are_renormalised_away_and_stay_invalid():
    padded = np.ones((3, 9, 9), np.float32)
    padded[:2, 4, 4] = np.nan  # invalid in the good bands
    padded[2, 0, 0] = np.nan  # a bad band's own NaN
    out = translate(padded, 0.1, 0.1, np.array([True, True, False]))
    assert np.isnan(out[:, 3, 3]).all()  # its nearest source pixel is the invalid one
    finite = np.isfinite(out[0])
    assert finite.sum() == out[0].size - 1
    np.testing.assert_allclose(out[:2][:, finite], 1.0, rtol=1e-6)  # a constant stays constant
    assert np.isnan(out[2, 0, 0]) and np.isfinite(out[2, 3, 4])  # spreads in its own band only


def test_edges_repeat_and_the_footprint_ends_half_a_pixel_out():
    np.testing.assert_array_equal(edge_indexes(-2, 6, 3), [2, 2, 2, 3, 4, 4])
    np.testing.assert_array_equal(outside_footprint(-0.7, 4, 3), [True, False, False, False])
    np.testing.assert_array_equal(outside_footprint(0.6, 3, 3), [False, False, True])
    np.testing.assert_array_equal(outside_footprint(0.3, 3, 3), [False, False, False])
