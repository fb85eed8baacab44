"""The degradation estimated from the pair: checked against pairs simulated with a known degradation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csakd_qgis.errors import InputError
from csakd_qgis.estimation import (
    blur_sample,
    estimate_degradation,
    estimate_noise,
    estimate_psf,
    estimate_srf,
    estimate_subspace_rank,
    infer_margin,
    reproduce_msi,
)
from csakd_qgis.simulation.degradation import blur_decimate, gaussian_psf, shift_image, simulate_pair


def indian_pines(shared: Path, bands: int = 200, size: int = 120):
    """Top-left ``(bands, size, size)`` crop of Indian Pines (reflectance, float64), its wavelengths and FWHMs (nm).

    Other band counts than the 200 stored are resampled linearly in wavelength, with an FWHM of the band spacing.
    """
    cube = np.load(shared / "indian_pines" / "Indian_pines_corrected.npy")[:size, :size].astype(np.float64)
    meta = json.loads((shared / "indian_pines" / "wavelengths.json").read_text())
    wl = np.asarray(next(iter(meta.values())), dtype=np.float64)
    cube = cube.transpose(2, 0, 1) / 10000.0
    if bands == wl.size:
        return cube, wl, None
    new = np.linspace(wl[0], wl[-1], bands)
    upper = np.clip(np.searchsorted(wl, new), 1, wl.size - 1)
    frac = (new - wl[upper - 1]) / (wl[upper] - wl[upper - 1])
    out = cube[upper - 1] * (1 - frac)[:, None, None] + cube[upper] * frac[:, None, None]
    return out, new, np.full(bands, new[1] - new[0])


def crop_pair(pair, border: int):
    """LR-HSI without ``border`` LR pixels on each side, and the full MSI (margin ``border * scale``)."""
    return pair.lr_hsi[:, border:-border, border:-border], pair.hr_msi


# ---- blur_sample -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("sigma", [0.0, 0.8, 2.3])
def test_blur_sample_equals_blur_decimate_at_zero_offset(scale, sigma):
    x = np.random.default_rng(scale).random((3, 60, 60))
    expected = blur_decimate(x, scale, gaussian_psf(scale, sigma=sigma))
    np.testing.assert_allclose(blur_sample(x, scale, sigma), expected, atol=1e-12)


@pytest.mark.parametrize("scale,offset", [(2, (0.5, -1.0)), (3, (1 / 3, 2 / 3)), (4, (-0.25, 0.75)), (5, (0.4, 0.0))])
def test_blur_sample_offset_follows_the_shift_convention(texture, scale, offset):
    # shift_image moves content by whole HR pixels here (exact), so the blurred LR of the moved scene must equal
    # the MSI sampled with the offset: lr(col, row) = msi_lr(col - dx, row - dy).
    scene = texture(60, 60, 2).astype(np.float64)
    moved = shift_image(scene, offset[0] * scale, offset[1] * scale)
    expected = blur_decimate(moved, scale, gaussian_psf(scale, sigma=1.1))
    got = blur_sample(scene, scale, 1.1, offset)
    inner = slice(3, -3)
    np.testing.assert_allclose(got[:, inner, inner], expected[:, inner, inner], atol=1e-9)


def test_blur_sample_margin_is_the_same_ground():
    x = np.random.default_rng(0).random((2, 48, 48))
    full = blur_sample(x, 4, 1.7, (0.3, -0.2))
    inner = blur_sample(x, 4, 1.7, (0.3, -0.2), margin=8)
    np.testing.assert_allclose(inner, full[:, 2:-2, 2:-2], atol=1e-12)


def test_blur_sample_box_with_fractional_offset_interpolates_linearly():
    x = np.random.default_rng(1).random((1, 24, 24))
    a, b = blur_sample(x, 3, 0.0, (0.0, 0.0)), blur_sample(x, 3, 0.0, (1.0 / 3.0, 0.0))
    half = blur_sample(x, 3, 0.0, (1.0 / 6.0, 0.0))
    np.testing.assert_allclose(half[:, :, 1:-1], 0.5 * (a + b)[:, :, 1:-1], atol=1e-12)


def test_blur_sample_nan_spreads_only_where_it_has_weight():
    x = np.ones((1, 40, 40))
    x[0, 20, 20] = np.nan
    out = blur_sample(x, 4, 0.0)
    assert np.isnan(out[0, 5, 5]) and np.isfinite(out).sum() == 99
    assert np.allclose(out[np.isfinite(out)], 1.0)


def test_blur_sample_and_margin_reject_bad_shapes():
    with pytest.raises(InputError):
        blur_sample(np.zeros((1, 30, 30)), 4, 1.0)
    with pytest.raises(InputError):
        blur_sample(np.zeros((1, 32, 32)), 4, -1.0)
    with pytest.raises(InputError):
        infer_margin((5, 8, 8), (4, 34, 35), 4)
    assert infer_margin((5, 8, 8), (4, 40, 40), 4) == 4


# ---- PSF and offset -------------------------------------------------------------------------------------------

PSF_CASES = [
    # scale, sigma (HR px), offset (LR px), bands, snr_db, crop (HR px)
    (2, 1.0, (0.2, -0.1), 200, None, 80),
    (3, 1.5, (0.1, 0.4), 20, None, 96),
    (4, 2.0, (0.3, -0.2), 400, None, 120),
    (4, 0.0, (0.25, -0.5), 60, None, 96),
    (5, 3.0, (-0.45, 0.05), 100, 35, 120),
    (6, 2.5, (-0.35, 0.15), 200, 30, 144),
    (6, 4.5, (0.0, 0.3), 50, None, 144),
]


@pytest.mark.parametrize("scale,sigma,offset,bands,snr,size", PSF_CASES)
def test_psf_and_offset_recovered_on_indian_pines(shared_data, scale, sigma, offset, bands, snr, size):
    cube, wl, fwhm = indian_pines(shared_data, bands, size)
    pair = simulate_pair(cube, wl, fwhm, scale=scale, sigma=sigma, shift=offset, snr_db=snr, seed=2)
    lr, msi = crop_pair(pair, 2)
    est = estimate_psf(lr, msi, scale)
    assert est.reliable, est.messages
    if sigma == 0:
        assert est.sigma == 0
    else:
        assert abs(est.sigma - sigma) <= 0.1 * sigma
    assert np.max(np.abs(np.subtract(est.offset, offset))) <= 0.05


def test_psf_on_synthetic_texture_without_margin(texture):
    cube = texture(96, 96, 30, seed=4).astype(np.float64)
    cube *= np.linspace(0.5, 1.5, 30)[:, None, None] ** np.linspace(-1, 1, 96)[None, :, None]
    wl = np.linspace(420, 950, 30)
    pair = simulate_pair(cube, wl, None, scale=3, sigma=1.4,
                         shift=(0.12, -0.2))
    est = estimate_psf(pair.lr_hsi, pair.hr_msi, 3)
    assert abs(est.sigma - 1.4) <= 0.14 and np.max(np.abs(np.subtract(est.offset, (0.12, -0.2)))) <= 0.05


def test_flat_scene_and_too_few_pixels_are_flagged():
    rng = np.random.default_rng(0)
    lr = 0.3 + 0.001 * rng.standard_normal((20, 16, 16))
    msi = 0.3 + 0.001 * rng.standard_normal((4, 64, 64))
    est = estimate_psf(lr, msi, 4)
    assert not est.reliable and any("flat" in m for m in est.messages)
    small = estimate_psf(lr[:, :5, :5], msi[:, :20, :20], 4)
    assert not small.reliable and any("pixels" in m for m in small.messages)


# ---- spectral response ------------------------------------------------------------------------------------------

MSI_BANDS = ("B2", "B3", "B4", "B8", "B11")


@pytest.mark.parametrize("snr", [None, 30])
def test_srf_reproduces_the_msi_and_finds_the_bands(shared_data, snr):
    cube, wl, _ = indian_pines(shared_data, 200)
    pair = simulate_pair(cube, wl, None, bands=MSI_BANDS, scale=4, sigma=2.0, snr_db=snr, seed=3)
    sampled = blur_sample(pair.hr_msi, 4, 2.0)
    noise = estimate_noise(pair.lr_hsi)
    est = estimate_srf(pair.lr_hsi, sampled, wavelengths_nm=wl, noise_std=noise)
    assert np.all(est.srf >= 0) and np.allclose(est.srf.sum(axis=1), 1.0)
    np.testing.assert_allclose(est.gain, 1.0, atol=0.1)
    clean = simulate_pair(cube, wl, None, bands=MSI_BANDS, scale=4, sigma=2.0)
    truth = blur_sample(clean.hr_msi, 4, 2.0)
    error = np.sqrt(np.mean((reproduce_msi(est, clean.lr_hsi) - truth) ** 2, axis=(1, 2)))
    assert np.all(error < 0.02 * np.sqrt(np.mean(truth**2, axis=(1, 2))))
    peaks, true_peaks = wl[est.srf[:3].argmax(axis=1)], wl[pair.srf[:3].argmax(axis=1)]
    assert np.all(np.abs(peaks - true_peaks) <= 15.0)
    if snr is None:
        assert np.all(np.abs(est.centroid_nm - pair.srf @ wl) <= 50.0)


def test_srf_prior_is_reported_and_bad_bands_get_no_weight(shared_data):
    cube, wl, _ = indian_pines(shared_data, 200)
    good = np.ones(200, dtype=bool)
    good[100:120] = False
    pair = simulate_pair(cube, wl, None, good=good, bands=MSI_BANDS, scale=3, sigma=1.5)
    sampled = blur_sample(pair.hr_msi, 3, 1.5)
    est = estimate_srf(pair.lr_hsi, sampled, good=good, wavelengths_nm=wl, prior=pair.srf)
    assert np.all(est.srf[:, ~good] == 0)
    assert est.prior_distance.shape == (5,) and np.all(est.prior_distance < 0.3)
    assert np.all(np.abs(est.prior_centroid_shift_nm) < 25.0)


# ---- noise and rank ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,snr", [(2, 30), (4, 25), (6, 35)])
def test_noise_recovered_at_known_snr(shared_data, scale, snr):
    cube, wl, _ = indian_pines(shared_data, 200)
    clean = simulate_pair(cube, wl, None, scale=scale, sigma=scale / 2)
    noisy = simulate_pair(cube, wl, None, scale=scale, sigma=scale / 2, snr_db=snr, seed=5)
    true_lr = np.std(noisy.lr_hsi - clean.lr_hsi, axis=(1, 2))
    ratio = estimate_noise(noisy.lr_hsi) / true_lr
    assert 0.9 < np.median(ratio) < 1.2 and np.percentile(ratio, 90) < 1.3
    # spatial differences count the scene's pixel-scale texture as noise: an upper bound, tight when noise dominates
    msi_ratio = estimate_noise(noisy.hr_msi) / np.std(noisy.hr_msi - clean.hr_msi, axis=(1, 2))
    assert np.all(msi_ratio > 0.9) and np.all(msi_ratio < (1.3 if snr <= 30 else 1.6))


def test_spatial_noise_on_a_smooth_scene(texture):
    rng = np.random.default_rng(3)
    scene = texture(64, 64, 4, seed=1).astype(np.float64)
    got = estimate_noise(scene + 0.01 * rng.standard_normal(scene.shape), method="spatial")
    np.testing.assert_allclose(got, 0.01, rtol=0.1)


def low_rank(rank: int, pixels: int, bands: int, noise: float, seed: int) -> np.ndarray:
    """``(bands, side, side)`` smooth random spectra of the given rank plus white noise."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(pixels))
    abundances = rng.gamma(2.0, 1.0, size=(rank, side * side))
    kernel = np.ones(9) / 9
    spectra = np.stack([np.convolve(rng.random(bands + 8), kernel, "valid") for _ in range(rank)], axis=1)
    cube = (spectra @ abundances).reshape(bands, side, side)
    return cube + noise * rng.standard_normal(cube.shape)


@pytest.mark.parametrize("rank,pixels,bands", [(3, 4096, 200), (6, 900, 100), (10, 2500, 60), (8, 100, 200)])
def test_rank_of_low_rank_plus_noise(rank, pixels, bands):
    cube = low_rank(rank, pixels, bands, noise=0.002, seed=rank)
    assert estimate_subspace_rank(cube) == rank
    assert estimate_subspace_rank(cube, np.full(bands, 0.002)) == rank


def test_rank_is_clamped_and_stable_with_few_pixels():
    cube = low_rank(12, 4096, 100, noise=0.002, seed=0)
    assert estimate_subspace_rank(cube, max_rank=8) == 8
    assert estimate_subspace_rank(low_rank(2, 4096, 100, 0.002, 1), min_rank=4) == 4
    few = [estimate_subspace_rank(cube[:, i:i + 10, :10]) for i in range(0, 60, 10)]
    assert max(few) - min(few) <= 1


# ---- the whole estimate -----------------------------------------------------------------------------------------


def test_estimate_degradation_on_an_enmap_tile(shared_data):
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(shared_data / "enmap_potsdam" / "enmap_potsdam_tile_160_64.tif") as ds:
        cube = ds.read().astype(np.float64)
        wl = np.array([float(ds.tags(i)["wavelength"]) for i in range(1, ds.count + 1)])
        good = np.array([float(ds.tags(i).get("bbl", 1)) > 0 for i in range(1, ds.count + 1)])
    cube[cube == -32768] = np.nan
    cube /= 10000.0
    pair = simulate_pair(np.where(good[:, None, None], cube, 0.0), wl, None, good=good, scale=2, sigma=1.0,
                         shift=(0.2, -0.15), snr_db=40, seed=0)
    lr = np.where(good[:, None, None], pair.lr_hsi, np.nan)[:, 2:-2, 2:-2]
    result = estimate_degradation(lr, pair.hr_msi, 2, good=good, srf_prior=pair.srf, wavelengths_nm=wl)
    assert abs(result.sigma - 1.0) <= 0.1 and np.max(np.abs(np.subtract(result.offset, (0.2, -0.15)))) <= 0.05
    assert result.srf.shape == (4, cube.shape[0]) and np.all(result.srf[:, ~good] == 0)
    assert np.all(np.isnan(result.noise_lr[~good])) and result.noise_msi.shape == (4,)
    assert 1 <= result.rank <= 30
    report = json.loads(json.dumps(result.to_dict()))
    first_bad = int(np.flatnonzero(~good)[0])
    assert report["scale"] == 2 and len(report["srf"]) == 4 and report["noise_lr"][first_bad] is None
