"""Learned correction on the classical floor: identity at initialisation, basis algebra, simulator, loss."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import pytest
import torch
from scipy import ndimage

from csakd_qgis.errors import InputError
from csakd_qgis.models.correction import CoefficientBasis, CorrectionNet, correction_config
from csakd_qgis.simulation.degradation import psf_sigma, simulate_pair
from csakd_qgis.training.correction import (
    Degradation,
    Example,
    Reference,
    Scene,
    band_error_db,
    batch,
    correction_loss,
    cut,
    draw_example,
    draw_scene,
    mosaic,
    prepare,
    score,
    simulate_fast,
    train_correction,
)

WAVELENGTHS = np.linspace(420.0, 950.0, 24)


def _cube(size: int = 18, bands: int = 24, seed: int = 0) -> np.ndarray:
    """A smooth, positive, low-rank ``(bands, size, size)`` scene."""
    rng = np.random.default_rng(seed)
    maps = ndimage.gaussian_filter(rng.random((5, size, size)), (0, 1.5, 1.5))
    spectra = rng.random((bands, 5)) + np.linspace(0.2, 1.0, bands)[:, None]
    return np.einsum("bk,khw->bhw", spectra, maps) / 5.0


def _example(seed: int = 0, rank: int = 4, good: Optional[np.ndarray] = None) -> Example:
    cube = _cube(seed=seed)
    good = np.ones(cube.shape[0], bool) if good is None else good
    pair = simulate_pair(cube, WAVELENGTHS, None, good, scale=3, sigma=psf_sigma(3), snr_db=40.0, seed=seed)
    return prepare("t", pair.lr_hsi, pair.hr_msi, pair.reference, good, pair.srf, 3, psf_sigma(3), (0.0, 0.0),
                   "gsa", rank)


def test_untrained_network_returns_the_base_exactly():
    examples = [_example(0), _example(1)]
    net = CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4)).eval()
    lr, msi, base, _ = batch(examples)
    with torch.no_grad():
        out = net(lr, msi, base, CoefficientBasis.stack([e.basis for e in examples]))
    assert torch.equal(out, base)
    # and a trained one does not: a non-zero head changes the output inside the subspace only
    torch.nn.init.normal_(net.body.decoder.head.proj.weight, std=0.1)
    with torch.no_grad():
        moved = net(lr, msi, base, CoefficientBasis.stack([e.basis for e in examples])) - base
    assert float(moved.abs().max()) > 1e-4
    b = examples[0].basis
    centred = moved[:1]
    inside = b.spectra(torch.einsum("bck,bchw->bkhw", b.basis, centred) / b.scale[:, :, None, None])
    torch.testing.assert_close(inside, centred, atol=1e-5, rtol=1e-4)


def test_complement_gain_scales_only_the_part_outside_the_subspace():
    ex = _example(2)
    net = CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4)).eval()
    lr, msi, base, _ = batch([ex])
    with torch.no_grad():
        net.complement_gain.fill_(-1.0)
        out = net(lr, msi, base, ex.basis)
    # g = -1 removes everything outside the subspace: out is mean + U U^T (base - mean), computed here in float64
    u, mu = ex.basis.basis[0].double().numpy(), ex.basis.mean[0].double().numpy()
    x = ex.base.astype(np.float64).reshape(ex.base.shape[0], -1) - mu[:, None]
    expect = (u @ (u.T @ x) + mu[:, None]).reshape(ex.base.shape)
    np.testing.assert_allclose(out[0].numpy(), expect, atol=1e-5)


def test_basis_whitens_the_lr_coefficients_and_fixes_signs():
    ex = _example(3, rank=4)
    b = ex.basis
    coef = b.coefficients(torch.from_numpy(ex.lr)[None])[0].reshape(4, -1).double()
    np.testing.assert_allclose(coef.mean(dim=1).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(coef.std(dim=1, unbiased=False).numpy(), 1.0, rtol=1e-3)
    u = b.basis[0].numpy()
    np.testing.assert_allclose(u.T @ u, np.eye(4), atol=1e-5)
    assert (u[np.abs(u).argmax(axis=0), np.arange(4)] > 0).all()
    flipped = CoefficientBasis.from_lr(-ex.lr + 2 * ex.lr.mean(), ex.good, 4)
    assert (flipped.basis[0].numpy()[np.abs(u).argmax(axis=0), np.arange(4)] > 0).all()


def test_bad_bands_keep_the_base_and_rank_is_checked():
    good = np.ones(24, bool)
    good[[0, 23]] = False
    ex = _example(4, good=good)
    net = CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4)).eval()
    torch.nn.init.normal_(net.body.decoder.head.proj.weight, std=0.1)
    lr, msi, base, _ = batch([ex])
    with torch.no_grad():
        out = net(lr, msi, base, ex.basis)
    assert torch.equal(out[:, ~torch.from_numpy(good)], base[:, ~torch.from_numpy(good)])
    with pytest.raises(InputError, match="rank"):
        CorrectionNet(correction_config(5, 4, 3, nf=8, gc=4))(lr, msi, base, ex.basis)


def test_fast_simulation_matches_simulate_pair_without_shift():
    cube = _cube()
    pair = simulate_pair(cube, WAVELENGTHS, None, scale=3, sigma=psf_sigma(3))
    lr, msi = simulate_fast(pair.reference, pair.srf, 3, psf_sigma(3), (0.0, 0.0), None, np.random.default_rng(0))
    np.testing.assert_allclose(lr, pair.lr_hsi, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(msi, pair.hr_msi, rtol=1e-12)


def test_fast_simulation_shift_moves_the_scene_like_simulate_pair():
    cube = _cube(size=30)
    sim = simulate_pair(cube, WAVELENGTHS, None, scale=3, sigma=psf_sigma(3), shift=(0.3, -0.2))
    lr, _ = simulate_fast(sim.reference, sim.srf, 3, psf_sigma(3), (0.3, -0.2), None, np.random.default_rng(0))
    still, _ = simulate_fast(sim.reference, sim.srf, 3, psf_sigma(3), (0.0, 0.0), None, np.random.default_rng(0))
    inner = (slice(None), slice(2, -2), slice(2, -2))  # edges differ: spline edge values vs renormalised taps
    err_shifted = np.abs(lr[inner] - sim.lr_hsi[inner]).max()
    assert err_shifted < 0.05 * np.abs(still[inner] - sim.lr_hsi[inner]).max()


def test_loss_is_lowest_for_the_reference_on_a_noise_free_pair():
    cube = _cube()
    good = np.ones(24, bool)
    pair = simulate_pair(cube, WAVELENGTHS, None, good, scale=3, sigma=psf_sigma(3))
    ex = prepare("t", pair.lr_hsi, pair.hr_msi, pair.reference, good, pair.srf, 3, psf_sigma(3), (0.0, 0.0),
                 "gsa", 4)
    lr, msi, base, ref = batch([ex])
    perfect = float(correction_loss(ref, [ex], lr, msi, ref, 1.0, 1.0))
    fitted = float(correction_loss(base, [ex], lr, msi, ref, 1.0, 1.0))
    assert perfect < fitted - 20.0  # dB: the reference matches both inputs far better than the base does
    noisy = ref + 0.01 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
    assert float(band_error_db(noisy, ref)) == pytest.approx(-score([ex], [noisy[0].numpy()])["psnr"], abs=1e-3)


def test_draw_example_augments_and_training_keeps_the_best_validation_state():
    cube = _cube(size=18)
    srf = simulate_pair(cube, WAVELENGTHS, None, scale=3, sigma=1.0).srf
    ref = Reference("t", cube, np.ones(24, bool), srf)
    deg = Degradation(crop=15)
    a, b = (draw_example(ref, np.random.default_rng(s), deg, rank=4) for s in (0, 1))
    assert a.lr.shape == (24, 5, 5) and a.base.shape == (24, 15, 15)
    assert a.sigma != b.sigma and a.offset != b.offset
    net = CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4))
    val = [_example(5)]
    run = train_correction(net, [ref], val, steps=2, batch_size=2, deg=deg, val_every=1)
    assert [c[0] for c in run.curve] == [0, 1, 2]
    best = max(run.curve, key=lambda c: c[2])
    assert run.best_step == best[0] and run.best_val["psnr"] == pytest.approx(best[2])


def test_loss_margin_leaves_the_border_ring_out_of_the_fit_only():
    ex = _example()
    lr, msi, base, ref = batch([ex])
    ring = ref.clone()
    ring[..., :3, :] += 0.5  # an error only in the top 3 rows
    assert float(correction_loss(ring, [ex], lr, msi, ref, 0.0, 0.0, margin=3)) < -100.0 + 1e-3  # the floor
    assert float(correction_loss(ring, [ex], lr, msi, ref, 0.0, 0.0)) > -30.0
    with_consistency = float(correction_loss(ring, [ex], lr, msi, ref, 1.0, 1.0, margin=3))
    assert with_consistency > float(correction_loss(ref, [ex], lr, msi, ref, 1.0, 1.0, margin=3))
    with pytest.raises(InputError, match="loss margin"):
        train_correction(CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4)), [Reference("t", _cube(), ex.good,
                         ex.srf)], [ex], steps=1, deg=Degradation(crop=15), loss_margin=8)


def test_references_of_two_sensors_train_in_batches_of_one_band_set():
    refs = []
    for bands, seed in ((24, 0), (20, 1)):
        cube = _cube(size=18, bands=bands, seed=seed)
        srf = simulate_pair(cube, np.linspace(420.0, 950.0, bands), None, scale=3, sigma=1.0).srf
        refs.append(Reference(f"{bands}", cube, np.ones(bands, bool), srf))
    net = CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4))
    run = train_correction(net, refs, [_example(5)], steps=4, batch_size=3, deg=Degradation(crop=15), val_every=2)
    assert [c[0] for c in run.curve] == [0, 2, 4] and all(np.isfinite(c[1]) for c in run.curve[1:])


def _parts(n: int = 4, size: int = 12) -> tuple:
    cubes = [_cube(size=size, seed=i) for i in range(n)]
    srf = simulate_pair(cubes[0], WAVELENGTHS, None, scale=3, sigma=1.0).srf
    return tuple(Reference(f"p{i}", c, np.ones(24, bool), srf) for i, c in enumerate(cubes))


def test_mosaic_lays_parts_out_in_rows_and_scenes_check_their_parts():
    parts = _parts()
    m = mosaic([p.cube for p in parts], 2)
    assert m.shape == (24, 24, 24)
    np.testing.assert_array_equal(m[:, 12:, :12], parts[2].cube)
    np.testing.assert_array_equal(m[:, :12, 12:], parts[1].cube)
    assert Scene("s", parts, 2).bands == 24
    with pytest.raises(InputError, match="columns"):
        Scene("s", parts, 3)
    with pytest.raises(InputError, match="square"):
        Scene("s", tuple(dataclasses.replace(p, cube=p.cube[:, :9]) for p in parts), 2)
    with pytest.raises(InputError, match="differ in shape"):
        Scene("s", (parts[0], dataclasses.replace(parts[1], cube=parts[1].cube[:, :9, :9])), 2)


def test_a_cut_keeps_the_whole_fit_and_its_lr_pixels():
    whole = _example()  # 18 x 18 HR, 6 x 6 LR
    c = cut(whole, 3, 6, 9)
    assert c.cut and c.basis is whole.basis
    np.testing.assert_array_equal(c.lr, whole.lr[:, 1:4, 2:5])
    np.testing.assert_array_equal(c.base, whole.base[:, 3:12, 6:15])
    np.testing.assert_array_equal(c.reference, whole.reference[:, 3:12, 6:15])
    with pytest.raises(InputError, match="LR grid"):
        cut(whole, 1, 0, 9)


def test_draw_scene_fits_the_base_on_the_whole_mosaic():
    scene = Scene("s", _parts(size=18), 2)
    deg = Degradation(crop=24)
    crops = draw_scene(scene, np.random.default_rng(0), deg, 3, base_method="gsa", rank=4)
    assert len(crops) == 3 and all(e.cut and e.base.shape == (24, 24, 24) and e.lr.shape == (24, 8, 8)
                                   for e in crops)
    assert crops[0].basis is crops[1].basis and crops[0].sigma == crops[2].sigma  # one simulation, one fit
    # a noise-free reference crop is consistent with its LR-HSI where the PSF stays inside it: the cut LR term
    # only looks there, so that term of the reference itself sits at the -100 dB floor too
    noise_free = dataclasses.replace(deg, snr_db=(200.0, 200.0))
    e = draw_scene(scene, np.random.default_rng(1), noise_free, 1, base_method="gsa", rank=4)[0]
    lr, msi, _, ref = batch([e])
    whole_lr = float(correction_loss(ref, [dataclasses.replace(e, cut=False)], lr, msi, ref, 1.0, 0.0))
    inner_lr = float(correction_loss(ref, [e], lr, msi, ref, 1.0, 0.0))
    assert inner_lr < -190.0 and whole_lr > -160.0  # -100 fit + the LR term: exact inside, not at the edges
    tiny = cut(dataclasses.replace(e, cut=False), 0, 0, 6)  # no LR pixel of a 6 px cut has its PSF inside
    lr, msi, _, ref = batch([tiny])
    assert float(correction_loss(ref, [tiny], lr, msi, ref, 1.0, 0.0)) == pytest.approx(-100.0, abs=1e-3)


def test_training_draws_crops_of_scenes_and_references_together():
    net = CorrectionNet(correction_config(4, 4, 3, nf=8, gc=4))
    refs = list(_parts(2, size=15))
    run = train_correction(net, [Scene("s", _parts(), 2), *refs], [_example(5)], steps=3, batch_size=3,
                           deg=Degradation(crop=12), crops_per_scene=2, val_every=1)
    assert run.best_step in (0, 1, 2, 3)
    assert [c[0] for c in run.curve] == [0, 1, 2, 3] and all(np.isfinite(c[1]) for c in run.curve[1:])
