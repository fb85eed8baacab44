"""Classical methods: exactness, tiles equal to the whole image, bad bands, shapes, quality on a real EnMAP tile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from csakd_qgis.classical import (
    GLP,
    ClassicalMethod,
    PsfGSA,
    Subspace,
    SubspaceFusion,
    default_rank,
    from_dict,
    fuse_whole,
    glp_halo,
    upsample,
)
from csakd_qgis.classical.baselines import GSA, bicubic_upsample
from csakd_qgis.classical.filters import polyphase_upsample, psf_taps
from csakd_qgis.classical.subspace import in_subspace
from csakd_qgis.errors import InputError
from csakd_qgis.fusion.tiling import reflect_indices
from csakd_qgis.quality.metrics import psnr
from csakd_qgis.simulation.degradation import blur_decimate, gaussian_psf, psf_sigma, simulate_pair


def _linear_scene(scale: int, sigma: float, bands: int = 12, size: int = 10, seed: int = 0):
    """HR-MSI ``(4, size s, size s)``, HSI bands exact linear combinations of it, and the LR-HSI made with the PSF."""
    rng = np.random.default_rng(seed)
    msi = ndimage.gaussian_filter(rng.random((4, size * scale, size * scale)), (0, 1.0, 1.0)) + 0.5
    mix = rng.random((bands, 4))
    hsi = np.einsum("cm,mhw->chw", mix, msi)
    return hsi, msi, blur_decimate(hsi, scale, gaussian_psf(scale, sigma=sigma))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_psf_taps_are_the_simulation_kernel(scale):
    for sigma in (0.0, 0.8, psf_sigma(scale)):
        kernel = gaussian_psf(scale, sigma=sigma)
        first, taps = psf_taps(scale, sigma)
        assert first == (scale - kernel.shape[0]) // 2
        np.testing.assert_allclose(taps, kernel.sum(axis=1), atol=1e-15)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_polyphase_bicubic_is_torch_bicubic(scale):
    lr = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    expected = bicubic_upsample(lr, scale).numpy()
    np.testing.assert_allclose(polyphase_upsample(lr, scale, "bicubic").numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(upsample(lr, scale, "bicubic").numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3])
def test_exact_on_linear_scene(scale):
    """HSI = A MSI and a known PSF: the fit finds A and both methods reconstruct the HSI to rounding.

    Exact over the whole image too: apply renormalises the PSF at the array's
    edge exactly as the simulation (blur_decimate) does.
    """
    sigma = psf_sigma(scale)
    hsi, msi, lr = _linear_scene(scale, sigma)
    for model in (GLP.fit(lr, msi, scale, sigma, ridge_strength=1e-13),
                  GLP.fit(lr, msi, scale, sigma, injection="hpm", ridge_strength=1e-13),
                  PsfGSA.fit(lr, msi, scale, sigma, ridge_strength=1e-13)):
        fused = model.apply(lr[None], msi[None])[0]
        assert np.abs(fused - hsi).max() < 1e-8, type(model).__name__


def _block_mean_gsa(lr, msi, scale, good=None, fill=None):
    """The engine's GSA before the PSF-matched fit: coefficients fitted against block means of the MSI."""
    model = GSA.fit(lr, blur_decimate(msi, scale, gaussian_psf(scale, sigma=0)), good)
    return model.apply(bicubic_upsample(lr if fill is None else fill, scale), msi)


def test_block_mean_fit_is_not_exact():
    """The same scene fitted against block means (today's engine) is far from exact: the test can tell."""
    scale, sigma = 3, psf_sigma(3)
    hsi, msi, lr = _linear_scene(scale, sigma)
    assert np.abs(_block_mean_gsa(lr, msi, scale) - hsi).max() > 1e-3


def test_nan_in_sample_is_left_out():
    scale, sigma = 3, psf_sigma(3)
    hsi, msi, lr = _linear_scene(scale, sigma, size=14)
    holed_msi, holed_lr = msi.copy(), lr.copy()
    holed_msi[:, 6:12, 6:12] = np.nan
    holed_lr[:, 10, 3] = np.nan
    model = GLP.fit(holed_lr, holed_msi, scale, sigma, ridge_strength=1e-13)
    assert np.abs(model.apply(lr[None], msi[None])[0] - hsi).max() < 1e-8


def _tiled(model, lr: np.ndarray, msi: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """Apply tile by tile, each read with ``halo`` LR px of mirrored context as the engine reads it."""
    s = model.scale
    _, h, w = lr.shape
    out = np.zeros((lr.shape[0], h * s, w * s), dtype=lr.dtype)
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            rows = reflect_indices(r - halo, min(r + tile, h) + halo, h)
            cols = reflect_indices(c - halo, min(c + tile, w) + halo, w)
            hr_rows = reflect_indices((r - halo) * s, (min(r + tile, h) + halo) * s, h * s)
            hr_cols = reflect_indices((c - halo) * s, (min(c + tile, w) + halo) * s, w * s)
            x = lr[:, rows][:, :, cols][None]
            g = msi[:, hr_rows][:, :, hr_cols][None]
            fused = model.apply(torch.from_numpy(x), torch.from_numpy(g)).numpy()[0]
            nr, nc = min(tile, h - r), min(tile, w - c)
            out[:, r * s:(r + nr) * s, c * s:(c + nc) * s] = fused[:, halo * s:(halo + nr) * s,
                                                                   halo * s:(halo + nc) * s]
    return out


@pytest.fixture(scope="module")
def noisy_pair():
    rng = np.random.default_rng(1)
    scale = 3
    hsi, msi, lr = _linear_scene(scale, 1.3, bands=16, size=23, seed=1)
    hsi = hsi + 0.05 * ndimage.gaussian_filter(rng.standard_normal(hsi.shape), (0, 1, 1))
    lr = blur_decimate(hsi, scale, gaussian_psf(scale, sigma=1.3)) + 0.01 * rng.standard_normal(lr.shape)
    return lr.astype(np.float32), msi.astype(np.float32), scale


@pytest.mark.parametrize("build", [
    lambda lr, msi, s: GLP.fit(lr, msi, s, 1.3, (0.3, -0.45)),
    lambda lr, msi, s: GLP.fit(lr, msi, s, 1.3, injection="hpm", kernel="lanczos3"),
    lambda lr, msi, s: PsfGSA.fit(lr, msi, s, 1.3, (0.3, -0.45)),
    lambda lr, msi, s: SubspaceFusion.fit(lr, msi, s, 1.3, rank=5),
    lambda lr, msi, s: SubspaceFusion.fit(lr, msi, s, 1.3, (0.3, -0.45), rank=5, back_project=True),
])
def test_tiles_equal_whole_image(noisy_pair, build):
    lr, msi, scale = noisy_pair
    model = build(lr, msi, scale)
    whole = fuse_whole(model, lr, msi)
    assert whole.dtype == np.float32 and whole.shape == (lr.shape[0], 69, 69)
    tiled = _tiled(model, lr, msi, tile=7, halo=model.halo)
    assert np.abs(tiled - whole).max() < 1e-5


def test_glp_halo_is_needed(noisy_pair):
    """One LR pixel less context than the halo changes the output: the halo is not oversized."""
    lr, msi, scale = noisy_pair
    model = GLP.fit(lr, msi, scale, 1.3, (0.3, -0.45))
    assert model.halo == glp_halo(scale, 1.3, (0.3, -0.45)) == 4
    short = _tiled(model, lr, msi, tile=7, halo=model.halo - 1)
    assert np.abs(short - fuse_whole(model, lr, msi)).max() > 1e-4


def test_bad_bands_get_no_detail_and_round_trip(noisy_pair):
    lr, msi, scale = noisy_pair
    lr = lr.copy()
    lr[3] = np.nan
    good = np.ones(lr.shape[0], bool)
    good[[3, 7]] = False
    filled = np.nan_to_num(lr)
    for model in (GLP.fit(lr, msi, scale, 1.3, good=good), GLP.fit(lr, msi, scale, 1.3, good=good, injection="hpm"),
                  PsfGSA.fit(lr, msi, scale, 1.3, good=good),
                  SubspaceFusion.fit(lr, msi, scale, 1.3, good=good, rank=4)):
        fused = model.apply(filled[None], msi[None])[0]
        plain = upsample(torch.from_numpy(filled[None]), scale).numpy()[0]
        np.testing.assert_allclose(fused[[3, 7]], plain[[3, 7]], atol=1e-6)
        assert np.abs(fused[0] - plain[0]).max() > 1e-3
        again = from_dict(json.loads(json.dumps(model.to_dict())))
        np.testing.assert_array_equal(again.apply(filled[None], msi[None]), model.apply(filled[None], msi[None]))


def test_gsa_in_the_subspace_equals_gsa_then_the_projection(noisy_pair):
    """The subspace methods never form GSA's bands at HR; what they form is exactly GSA's output projected."""
    lr, msi, scale = noisy_pair
    lr = lr.astype(np.float64)
    good = np.ones(lr.shape[0], bool)
    good[[3, 7]] = False
    gsa = PsfGSA.fit(lr, msi, scale, 1.3, (0.3, -0.45), good=good)
    subspace = Subspace.fit(lr, good, 5)
    x = lr.copy()
    x[3, 2, 2] = np.nan  # a bad band's NaN stays in that band; a good band's spreads to every band (GSA's detail)
    x[5, 6, 1] = np.nan
    x, g = torch.from_numpy(x[None]), torch.from_numpy(msi[None].astype(np.float64))
    coords, others = in_subspace(gsa, x, g, good, subspace.basis, subspace.mean)
    fused = gsa.apply(x, g)
    expected = torch.einsum("ck,bchw->bkhw", torch.from_numpy(subspace.basis),
                            fused[:, good] - torch.from_numpy(subspace.mean)[:, None, None])
    np.testing.assert_allclose(coords.numpy(), expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(others.numpy(), fused[:, ~good].numpy(), atol=1e-12)
    assert torch.equal(torch.isnan(coords), torch.isnan(expected).any(dim=1, keepdim=True).expand_as(coords))
    assert torch.equal(torch.isnan(others), torch.isnan(fused[:, ~good]))
    assert bool(torch.isnan(others[0, 0, 7, 7])) and not bool(torch.isnan(coords[0, :, 7, 7]).any())
    np.testing.assert_allclose(SubspaceFusion(subspace, gsa).apply(x, g).numpy(),
                               subspace.project(fused).numpy(), atol=1e-12)


def test_shapes_dtypes_and_errors(noisy_pair):
    lr, msi, scale = noisy_pair
    model = GLP.fit(lr, msi, scale, 1.3)
    out = model.apply(lr[None, :, :8, :9], msi[None, :, :24, :27])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 16, 24, 27)
    batch = torch.from_numpy(np.stack([lr[:, :8, :8], lr[:, 8:16, :8]]))
    guide = torch.from_numpy(np.stack([msi[:, :24, :24], msi[:, 24:48, :24]]))
    out = model.apply(batch, guide)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 16, 24, 24)
    method = ClassicalMethod(model, "glp")
    assert method.predict(batch.numpy(), guide.numpy()).dtype == np.float32 and method.halo == model.halo
    with pytest.raises(InputError):
        model.apply(lr[None, :, :8, :8], msi[None, :, :23, :24])
    with pytest.raises(InputError):
        model.apply(lr[None, :5], msi[None])
    with pytest.raises(InputError):
        GLP.fit(lr, msi[:, :-3], scale, 1.3)
    with pytest.raises(InputError):
        GLP.fit(lr, msi, scale, -1.0)
    with pytest.raises(InputError):
        GLP.fit(lr, msi, scale, 1.3, kernel="nearest")
    with pytest.raises(InputError):
        SubspaceFusion.fit(lr, msi, scale, 1.3, rank=0)


def test_default_rank_finds_a_low_rank_signal_in_white_noise():
    rng = np.random.default_rng(3)
    signal = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 150)) * 3.0
    noisy = signal + 0.1 * rng.standard_normal(signal.shape)
    xc = noisy - noisy.mean(axis=0)
    ev = np.linalg.eigvalsh(xc.T @ xc / 399)
    assert default_rank(ev, 400) == 12
    lr = noisy.T.reshape(150, 20, 20)
    assert Subspace.fit(lr).rank == 12


@pytest.fixture
def enmap_tile(shared_data: Path):
    from csakd_qgis.io.read import read_whole

    info, cube, _ = read_whole(str(shared_data / "enmap_potsdam" / "enmap_potsdam_tile_64_0.tif"), "the test")
    good = np.array([b.good for b in info.bands])
    return (np.where(good[:, None, None], np.nan_to_num(cube[:, :30, :30].astype(np.float64)), 0.0),
            [b.wavelength_nm for b in info.bands], [b.fwhm_nm for b in info.bands], good)


def _score(pair, good, fused):
    return psnr(pair.reference[good], np.asarray(fused, dtype=np.float64)[good])


def test_glp_beats_block_mean_gsa_on_enmap(enmap_tile):
    cube, wl, fwhm, good = enmap_tile
    sigma = psf_sigma(3)
    pair = simulate_pair(cube, wl, fwhm, good, scale=3, sigma=sigma)
    lr, msi = np.nan_to_num(pair.lr_hsi).astype(np.float32), pair.hr_msi.astype(np.float32)
    old_psnr = _score(pair, good, _block_mean_gsa(pair.lr_hsi, msi, 3, good, fill=lr))
    glp_psnr = _score(pair, good, fuse_whole(GLP.fit(pair.lr_hsi, pair.hr_msi, 3, sigma, good=good), lr, msi))
    gsa_psnr = _score(pair, good, fuse_whole(PsfGSA.fit(pair.lr_hsi, pair.hr_msi, 3, sigma, good=good), lr, msi))
    assert glp_psnr > old_psnr + 3.0
    assert gsa_psnr > old_psnr + 3.0


@pytest.mark.parametrize("method, inner", [("psf_gsa", PsfGSA), ("glp", GLP)])
def test_subspace_projection_helps_on_noisy_enmap(enmap_tile, method, inner):
    cube, wl, fwhm, good = enmap_tile
    sigma = psf_sigma(3)
    pair = simulate_pair(cube, wl, fwhm, good, scale=3, sigma=sigma, snr_db=35.0, seed=0)
    lr, msi = np.nan_to_num(pair.lr_hsi).astype(np.float32), pair.hr_msi.astype(np.float32)
    plain = _score(pair, good, fuse_whole(inner.fit(pair.lr_hsi, pair.hr_msi, 3, sigma, good=good), lr, msi))
    model = SubspaceFusion.fit(pair.lr_hsi, pair.hr_msi, 3, sigma, good=good, method=method)
    assert _score(pair, good, fuse_whole(model, lr, msi)) > plain + 0.1
