import numpy as np
import pytest

from csakd_qgis.errors import InputError
from csakd_qgis.simulation import degradation as D


def test_psf_sigma_from_mtf():
    # MTF(1/(2s)) = exp(-2 pi^2 sigma^2 / (4 s^2)) must give back the requested 0.3
    s = 4
    sigma = D.psf_sigma(s, 0.3)
    assert np.exp(-2 * np.pi**2 * sigma**2 * (1 / (2 * s)) ** 2) == pytest.approx(0.3)
    k = D.gaussian_psf(s)
    assert k.shape[0] % 2 == 0 and k.sum() == pytest.approx(1.0)
    assert D.gaussian_psf(3).shape[0] % 2 == 1
    np.testing.assert_allclose(k, k.T)


def test_box_psf_is_gdal_average_and_constant_preserved():
    rng = np.random.default_rng(0)
    x = rng.random((2, 12, 12))
    lr = D.blur_decimate(x, 3, D.gaussian_psf(3, sigma=0))
    np.testing.assert_allclose(lr, x.reshape(2, 4, 3, 4, 3).mean(axis=(2, 4)))
    const = D.blur_decimate(np.full((1, 16, 16), 7.0), 4, D.gaussian_psf(4))
    np.testing.assert_allclose(const, 7.0)


def test_gaussian_psf_is_centred_on_the_block():
    # a single bright HR pixel: the LR response is symmetric about the block centre
    x = np.zeros((1, 32, 32))
    x[0, 13:15, 13:15] = 1.0        # 2x2 spot in the centre of LR pixel (3, 3) for s=4
    lr = D.blur_decimate(x, 4, D.gaussian_psf(4))[0]
    assert np.argmax(lr) == 3 * 8 + 3
    assert lr[2, 3] > 0.01
    assert lr[2, 3] == pytest.approx(lr[4, 3]) and lr[3, 2] == pytest.approx(lr[3, 4])


def test_mean_roughly_preserved_and_nan_propagates_to_its_block_only():
    rng = np.random.default_rng(1)
    x = 1 + 0.1 * rng.random((3, 32, 32))
    assert D.blur_decimate(x, 4, D.gaussian_psf(4)).mean() == pytest.approx(x.mean(), rel=1e-3)
    x[1, 9, 13] = np.nan
    lr = D.blur_decimate(x, 4, D.gaussian_psf(4))
    assert np.isnan(lr).sum() == 1 and np.isnan(lr[1, 2, 3])


def test_shift_of_a_sine_is_recovered():
    cols = np.arange(64.0)
    f = 1 / 16
    x = np.tile(np.sin(2 * np.pi * f * cols), (1, 8, 1))
    shifted = D.shift_image(x, 0.3, 0.0)
    expected = np.sin(2 * np.pi * f * (cols - 0.3))     # +x east: content moves to larger columns
    np.testing.assert_allclose(shifted[0, 4, 8:-8], expected[8:-8], atol=2e-3)
    down = D.shift_image(np.transpose(x, (0, 2, 1)), 0.0, 0.3)
    np.testing.assert_allclose(down[0, 8:-8, 4], expected[8:-8], atol=2e-3)


def test_noise_snr():
    rng = np.random.default_rng(2)
    x = np.full((2, 100, 100), 10.0)
    noisy = D.add_noise(x, 20.0, rng)
    assert np.std(noisy - x) == pytest.approx(1.0, rel=0.03)   # power 100 / 10^2 -> sigma 1


def test_simulate_pair_msi_is_srf_times_reference():
    rng = np.random.default_rng(3)
    wl = np.arange(420.0, 900.0, 10.0)
    ref = rng.random((wl.size, 18, 17))
    pair = D.simulate_pair(ref, wl, None, sensor="sentinel2", bands=["B2", "B3", "B4", "B8"], scale=4)
    assert pair.reference.shape == (wl.size, 16, 16)
    assert pair.lr_hsi.shape == (wl.size, 4, 4) and pair.hr_msi.shape == (4, 16, 16)
    np.testing.assert_allclose(pair.hr_msi, np.einsum("mc,chw->mhw", pair.srf, pair.reference))
    np.testing.assert_allclose(pair.lr_hsi, D.blur_decimate(pair.reference, 4, pair.psf))
    with pytest.raises(InputError):
        D.simulate_pair(ref[:, :3, :3], wl, None, scale=4)


def test_simulate_pair_shift_and_noise_are_seeded():
    rng = np.random.default_rng(4)
    wl = np.arange(420.0, 900.0, 10.0)
    ref = rng.random((wl.size, 16, 16))
    a = D.simulate_pair(ref, wl, None, scale=4, snr_db=30, seed=7, shift=(0.25, 0.0))
    b = D.simulate_pair(ref, wl, None, scale=4, snr_db=30, seed=7, shift=(0.25, 0.0))
    np.testing.assert_array_equal(a.lr_hsi, b.lr_hsi)
    clean = D.simulate_pair(ref, wl, None, scale=4)
    assert not np.allclose(a.lr_hsi, clean.lr_hsi)
