import numpy as np
import pytest

from csakd_qgis.errors import InputError
from csakd_qgis.simulation import srf as S

WL = np.arange(400.0, 1001.0, 10.0)   # 61 bands, 10 nm apart


def test_rows_sum_to_one_and_centres_match_sensor():
    pytest.importorskip("pyrsr")
    r = S.spectral_response_matrix(WL, np.full(WL.size, 10.0), "sentinel2", ["B2", "B3", "B4", "B8"])
    assert r.shape == (4, WL.size)
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    # spectral centre of mass of each row near the ESA centre wavelengths
    np.testing.assert_allclose(r @ WL, [492.4, 559.8, 664.6, 832.8], atol=3.0)


@pytest.mark.parametrize("source, lo, hi", [("table", 430, 555), ("pyrsr", 455, 530)])
def test_b2_weight_concentrated_in_the_blue(source, lo, hi):
    if source == "pyrsr":
        pytest.importorskip("pyrsr")
    wl = np.arange(400.0, 701.0, 5.0)
    r = S.spectral_response_matrix(wl, None, "sentinel2", ["B02"], source=source)
    inside = (wl >= lo) & (wl <= hi)
    assert r[0, inside].sum() > 0.95
    assert r[0, wl > 600].sum() < 1e-3


def test_gaussian_table_close_to_pyrsr():
    pytest.importorskip("pyrsr")
    for sensor, bands in [("sentinel2", ["B2", "B3", "B4", "B8", "B8A"]), ("landsat8", ["B2", "B3", "B4", "B5"])]:
        measured = S.spectral_response_matrix(WL, None, sensor, bands, source="pyrsr")
        modelled = S.spectral_response_matrix(WL, None, sensor, bands, source="table")
        np.testing.assert_allclose(measured @ WL, modelled @ WL, atol=4.0)


def test_bad_bands_get_zero_weight_and_delta_uses_response_values():
    sb = S.SensorBands.gaussian([500.0], [40.0], ["X"])
    wl = np.array([480.0, 500.0, 520.0])
    r = S.spectral_response_matrix(wl, None, sb)
    # delta model, equal widths: weights are the response values exp(-4 ln2 (20/40)^2) = 0.5 at +-20 nm
    np.testing.assert_allclose(r[0], np.array([0.5, 1.0, 0.5]) / 2.0, atol=1e-3)
    r_bad = S.spectral_response_matrix(wl, None, sb, good=[True, False, True])
    assert r_bad[0, 1] == 0 and r_bad[0, 0] == pytest.approx(0.5)


def test_uncovered_band_names_the_band():
    with pytest.raises(InputError, match="B8"):
        S.spectral_response_matrix(np.arange(400.0, 700.0, 10.0), None, "sentinel2", ["B2", "B8"])
    with pytest.raises(InputError, match="no band 'B13'"):
        S.sensor_bands("sentinel2", ["B13"])
    with pytest.raises(InputError, match="unknown sensor"):
        S.sensor_bands("worldview3", ["B1"])


def test_quadrature_widths():
    np.testing.assert_allclose(S.quadrature_widths([400.0, 410.0, 430.0]), [10.0, 15.0, 20.0])
    np.testing.assert_allclose(S.quadrature_widths([430.0, 400.0, 410.0]), [20.0, 10.0, 15.0])
