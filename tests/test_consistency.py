"""The LR back-projection (csakd_qgis.classical.consistency) and the adjoint it rests on."""

from pathlib import Path

import numpy as np
import pytest
import torch

from csakd_qgis.classical import SubspaceFusion, fuse_whole
from csakd_qgis.classical.consistency import MIN_REGULARISER, LrConsistency, inverse_kernel, lr_autocorrelation
from csakd_qgis.classical.filters import blur_sample, sample_adjoint
from csakd_qgis.io.read import read_whole
from csakd_qgis.quality.metrics import psnr
from csakd_qgis.simulation.degradation import psf_sigma, simulate_pair


@pytest.mark.parametrize("scale, sigma, offset", [(3, 1.48, (0.0, 0.0)), (4, 1.98, (0.3, -0.4)),
                                                  (3, 0.0, (0.2, 0.1)), (2, 1.0, (-0.45, 0.45))])
def test_sample_adjoint_is_the_transpose_of_blur_sample(scale, sigma, offset):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 12 * scale, 9 * scale, dtype=torch.float64, generator=gen)
    y = torch.randn(2, 1, 12, 9, dtype=torch.float64, generator=gen)
    # blur_sample renormalises where taps fall outside; with x zero there, the plain map is what it computes inside
    inner = torch.zeros_like(x)
    inner[..., 3 * scale:-3 * scale, 3 * scale:-3 * scale] = x[..., 3 * scale:-3 * scale, 3 * scale:-3 * scale]
    ycrop = torch.zeros_like(y)
    ycrop[..., 5:-5, 4:-4] = y[..., 5:-5, 4:-4]
    forward = (blur_sample(inner, scale, sigma, offset)[0] * ycrop).sum()
    backward = (inner * sample_adjoint(ycrop, scale, sigma, offset, (12 * scale, 9 * scale))).sum()
    assert float(forward) == pytest.approx(float(backward), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blur_sample_marks_complete_footprints_in_either_precision(dtype):
    low, complete = blur_sample(torch.rand(1, 2, 24, 24, dtype=dtype), 3, 1.48, (0.2, 0.0))
    # around LR pixel i's first HR pixel 3 i the taps span -4 .. +6 along y (no offset; complete for i = 2 .. 5)
    # and -4 .. +5 along x (offset 0.2 LR px; i = 2 .. 6): a float32 footprint's weight is 1 only to rounding
    rows, cols = torch.zeros(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)
    rows[2:6], cols[2:7] = True, True
    assert torch.equal(complete[0, 0], rows[:, None] & cols[None, :])


@pytest.mark.parametrize("scale, sigma", [(3, 1.48), (4, 1.98), (2, 0.0)])
def test_inverse_kernel_inverts_the_lr_autocorrelation(scale, sigma):
    g = lr_autocorrelation(scale, sigma)
    assert g.size % 2 == 1 and g[g.size // 2] == g.max()
    assert g.sum() == pytest.approx(1.0 / scale, rel=0.02)  # the taps sum to 1, spread over s phases
    for requested in (1e-6, 0.5):  # below the floor (MIN_REGULARISER times g's sum), and above it
        r = max(requested, MIN_REGULARISER * g.sum() ** 2)
        h = inverse_kernel(g, g, requested)
        k = h.shape[0] // 2 + g.size // 2
        padded = np.pad(h, g.size // 2)
        gram = torch.from_numpy(np.outer(g, g))[None, None]
        eye = torch.nn.functional.conv2d(torch.from_numpy(padded)[None, None], gram, padding=g.size // 2)[0, 0].numpy()
        eye = eye + r * padded
        delta = np.zeros_like(eye)
        delta[k, k] = 1.0
        assert np.abs(eye - delta).max() < 1e-3  # the cut tail only
    assert inverse_kernel(g, g, float("inf")).tolist() == [[0.0]]


def test_back_projection_brings_the_fusion_closer_to_the_lr_and_the_truth(shared_data: Path):
    info, cube, _ = read_whole(str(sorted((shared_data / "enmap_potsdam").glob("*.tif"))[0]), "the test")
    wl, fwhm = [b.wavelength_nm for b in info.bands], [b.fwhm_nm for b in info.bands]
    good = np.array([b.good for b in info.bands])
    cube = np.where(good[:, None, None], np.nan_to_num(cube), 0.0)
    # 10 x 10 LR pixels, mirrored at the edges: enough for the residual statistics
    sigma = psf_sigma(3)
    pair = simulate_pair(cube[:, :30, :30], wl, fwhm, good, scale=3, sigma=sigma, snr_db=35.0, seed=0)
    lr, msi = pair.lr_hsi.astype(np.float32), pair.hr_msi.astype(np.float32)
    plain = SubspaceFusion.fit(lr, msi, 3, sigma, good=good)
    corrected = SubspaceFusion.fit(lr, msi, 3, sigma, good=good, back_project=True)
    assert corrected.consistency is not None and corrected.consistency.active
    assert corrected.halo > plain.halo
    out_plain, out_bp = fuse_whole(plain, lr, msi), fuse_whole(corrected, lr, msi)

    def lr_error(out):  # against the noise-free LR-HSI: the fusion, blurred and sampled, should reproduce it
        low = blur_sample(torch.from_numpy(out[good].astype(np.float64))[None], 3, sigma)[0][0]
        clean = blur_sample(torch.from_numpy(pair.reference[good])[None], 3, sigma)[0][0]
        return float(torch.sqrt(torch.mean((low - clean) ** 2)))

    assert lr_error(out_bp) < 0.9 * lr_error(out_plain)  # 0.81 measured
    valid = np.ones(out_bp.shape[1:], bool)
    assert psnr(pair.reference[good], out_bp[good], valid) > psnr(pair.reference[good], out_plain[good], valid)
    # the correction is invisible to the MSI: GSA's intensity weights see the same image with and without it
    seen = corrected.inner.model.weights[:, good]
    np.testing.assert_allclose(np.einsum("mc,chw->mhw", seen, out_bp[good].astype(np.float64)),
                               np.einsum("mc,chw->mhw", seen, out_plain[good].astype(np.float64)), atol=2e-5)
    # the bad bands pass unchanged; a JSON round trip rebuilds the same correction
    assert np.array_equal(out_bp[~good], out_plain[~good])
    again = SubspaceFusion.from_dict(corrected.to_dict())
    assert isinstance(again.consistency, LrConsistency)
    assert np.array_equal(fuse_whole(again, lr, msi), out_bp)


def test_a_sample_too_small_for_the_residual_statistics_gets_no_correction():
    rng = np.random.default_rng(0)
    lr = rng.random((12, 6, 6)).astype(np.float32)
    msi = rng.random((4, 18, 18)).astype(np.float32)
    model = SubspaceFusion.fit(lr, msi, 3, 1.3, good=None, rank=3, back_project=True)
    assert model.consistency is not None and not model.consistency.active
    np.testing.assert_allclose(fuse_whole(model, lr, msi), fuse_whole(SubspaceFusion.fit(lr, msi, 3, 1.3, rank=3),
                                                                    lr, msi), rtol=1e-5, atol=1e-5)


def test_auto_takes_the_back_projection_where_it_corrects_else_the_snr_rule():
    from csakd_qgis.classical import NOISY_SNR_DB, choose
    assert choose(30.0)[0] == choose(60.0)[0] == "subspace_bp"
    assert choose(NOISY_SNR_DB - 0.1, back_projection_active=False)[0] == "subspace_bp"  # = the plain projection
    assert choose(NOISY_SNR_DB, back_projection_active=False)[0] == "gsa"
    assert choose(None)[0] == choose(None, back_projection_active=False)[0] == "gsa"


def test_the_engine_says_when_the_back_projection_had_nothing_to_measure(geotiff, texture, tmp_path):
    from affine import Affine

    from csakd_qgis.fusion.engine import fuse
    lr = geotiff("lr.tif", texture(6, 6, 8, seed=1), transform=Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0))
    msi = geotiff("msi.tif", texture(18, 18, 3, seed=2), transform=Affine(10.0, 0, 366000.0, 0, -10.0, 5810000.0))
    report = fuse(str(lr), str(msi), str(tmp_path / "o.tif"), method="subspace_bp", device="cpu")
    assert report.method == "subspace_bp"
    assert any("the back-projection found nothing to correct" in n for n in report.notes)


def test_auto_keeps_the_back_projection_only_where_it_corrects(geotiff, texture, tmp_path):
    from affine import Affine

    from csakd_qgis.fusion.engine import fuse
    lr = geotiff("lr.tif", texture(6, 6, 8, seed=1), transform=Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0))
    msi = geotiff("msi.tif", texture(18, 18, 3, seed=2), transform=Affine(10.0, 0, 366000.0, 0, -10.0, 5810000.0))
    report = fuse(str(lr), str(msi), str(tmp_path / "o.tif"), device="cpu")
    (first,) = [n for n in report.notes if n.startswith("method auto:")]
    (after,) = [n for n in report.notes if n.startswith("method auto, after the fit:")]
    assert "back-projected" in first and "nothing to back-project" in after
    assert report.method == ("subspace_bp" if "< 38 dB" in after else "gsa")


def test_the_residual_measured_block_by_block_equals_the_whole_sample(monkeypatch):
    import csakd_qgis.classical.consistency as consistency
    from csakd_qgis.classical import PsfGSA, Subspace
    from csakd_qgis.classical.subspace import in_subspace
    from csakd_qgis.fusion.tiling import reflect_pad

    rng = np.random.default_rng(3)
    scale, sigma = 3, 1.3
    abundance = rng.random((4, 70 * scale, 45 * scale))
    hsi = np.einsum("ck,khw->chw", rng.random((30, 4)), abundance)
    pair = simulate_pair(hsi, np.linspace(400, 1000, 30), None, scale=scale, sigma=sigma, snr_db=40.0, seed=1)
    lr, msi = pair.lr_hsi, pair.hr_msi
    good = np.ones(30, bool)
    subspace, inner = Subspace.fit(lr, good, 6), PsfGSA.fit(lr, msi, scale, sigma, good=good)
    reach = inner.halo + 2
    lr_p = reflect_pad(lr, ((reach, reach), (reach, reach)))
    msi_p = reflect_pad(msi, ((reach * scale,) * 2, (reach * scale,) * 2))
    inside = np.zeros(lr_p.shape[1:], bool)
    inside[reach:-reach, reach:-reach] = True
    weights = subspace.basis / 2.0

    def power():
        def base(x, g, basis, mean):
            return in_subspace(inner, x, g, good, basis, mean)[0]

        return consistency._residual_power(subspace.mean, subspace.basis, weights, base, lr_p, msi_p, good,
                                           inside, reach, scale, sigma, (0.0, 0.0))

    blocks = power()  # 32-pixel blocks: 3 x 2 of them
    monkeypatch.setattr(consistency, "_BLOCK", 1000)
    np.testing.assert_allclose(blocks, power(), rtol=1e-4)
