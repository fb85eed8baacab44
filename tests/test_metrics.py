import numpy as np
import pytest
from scipy import ndimage

from csakd_qgis.errors import InputError
from csakd_qgis.quality import metrics as M


def _pair(seed=0, shape=(4, 40, 40)):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape) + 0.5
    return ref, ref + 0.05 * rng.standard_normal(shape)


def test_psnr_of_constant_offset_by_hand():
    ref = np.zeros((2, 8, 8))
    ref[0, 0, 0], ref[1, 0, 0] = 2.0, 1.0
    fused = ref + 0.1
    # range: peak 2 for both bands, MSE 0.01 -> 10 log10(400) = 26.0206
    assert M.psnr(ref, fused) == pytest.approx(10 * np.log10(4 / 0.01))
    # band_max: peaks 2 and 1 -> mean of 26.0206 and 20
    assert M.psnr(ref, fused, peak="band_max") == pytest.approx(0.5 * (10 * np.log10(400) + 20.0))
    assert M.psnr(ref, fused, data_range=10.0) == pytest.approx(40.0)


def test_sam_of_vectors_at_known_angle():
    ref = np.zeros((2, 1, 2))
    fused = np.zeros((2, 1, 2))
    ref[:, 0, 0], fused[:, 0, 0] = (1, 0), (np.cos(np.radians(30)), np.sin(np.radians(30)))
    ref[:, 0, 1], fused[:, 0, 1] = (3, 4), (6, 8)          # parallel: 0 degrees
    assert M.sam(ref, fused) == pytest.approx(15.0)
    ref[:, 0, 1] = 0                                       # zero spectrum is excluded
    assert M.sam(ref, fused) == pytest.approx(30.0)


def test_ergas_rmse_cc_by_hand():
    ref = np.stack([np.full((4, 4), 10.0), np.full((4, 4), 20.0)])
    ref[:, 0, 0] += 1.0
    fused = ref.copy()
    fused[0] += 1.0    # RMSE_0 = 1, mean_0 = 10.0625
    fused[1] -= 2.0    # RMSE_1 = 2, mean_1 = 20.0625
    expected = 100 / 4 * np.sqrt(0.5 * ((1 / 10.0625) ** 2 + (2 / 20.0625) ** 2))
    assert M.ergas(ref, fused, scale=4) == pytest.approx(expected)
    assert M.rmse(ref, fused) == pytest.approx(np.sqrt(2.5))
    assert M.cc(ref, fused) == pytest.approx(1.0)
    assert M.cc(ref, -fused) == pytest.approx(-1.0)


def test_mask_excludes_pixels_and_nan():
    ref, fused = _pair()
    fused[:, :5] = 1e6
    valid = np.ones(ref.shape[1:], bool)
    valid[:5] = False
    masked = M.rmse(ref, fused, valid)
    ref2 = ref.copy()
    ref2[:, :5] = np.nan
    assert masked == pytest.approx(np.sqrt(np.mean((ref[:, 5:] - fused[:, 5:]) ** 2)))
    assert M.rmse(ref2, fused) == pytest.approx(masked)
    with pytest.raises(InputError):
        M.rmse(ref, fused, np.zeros_like(valid))


def _ssim_reference(x, y, data_range):
    """Independent Wang et al. SSIM: reflect-filtered moments, 5-pixel border cropped."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for a, b in zip(x, y):
        f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5)  # noqa: E731
        ma, mb = f(a), f(b)
        va, vb, cab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
        vals.append(s[5:-5, 5:-5].mean())
    return np.mean(vals)


def test_ssim_matches_independent_computation_and_identity():
    ref, fused = _pair(1)
    assert M.ssim(ref, ref) == pytest.approx(1.0)
    assert M.ssim(ref, fused, data_range=2.0) == pytest.approx(_ssim_reference(ref, fused, 2.0), rel=1e-10)
    # a constant shift d changes only the luminance term: (2 mu (mu+d) + C1) / (mu² + (mu+d)² + C1)
    flat = np.full((1, 30, 30), 3.0)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 3 * 3.5 + c1) / (9 + 3.5**2 + c1)
    assert M.ssim(flat, flat + 0.5, data_range=1.0) == pytest.approx(expected)


def test_uiqi_and_q2n_identity_and_degradation():
    ref, fused = _pair(2, (5, 64, 64))
    assert M.uiqi(ref, ref) == pytest.approx(1.0)
    assert M.q2n(ref, ref) == pytest.approx(1.0)
    assert M.q2n(ref, fused) < 0.99
    assert M.uiqi(ref, fused) < 0.99


def test_uiqi_single_block_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])[None]
    y = np.array([[2.0, 2.0], [4.0, 4.0]])[None]
    mx, my = 2.5, 3.0
    vx, vy, cxy = 1.25, 1.0, 1.0
    expected = 4 * cxy * mx * my / ((vx + vy) * (mx**2 + my**2))
    assert M.uiqi(x, y, block=2) == pytest.approx(expected)


def _hamilton(a, b):
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return np.array([a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3, a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2,
                     a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1, a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0])


def test_cayley_dickson_signs_are_the_quaternions():
    s = M.cayley_dickson_signs(4)
    eye = np.eye(4)
    for i in range(4):
        for j in range(4):
            expected = _hamilton(eye[i], eye[j])
            got = np.zeros(4)
            got[i ^ j] = s[i, j]
            np.testing.assert_array_equal(got, expected)


def test_q2n_quaternion_against_independent_formula():
    rng = np.random.default_rng(3)
    ref = rng.random((3, 16, 16)) + 1.0   # 3 bands: padded to 4 (a zero band)
    fused = ref + 0.3 * rng.standard_normal(ref.shape)
    # independent: normalise per band by the reference, pad, Hamilton products
    z = np.concatenate([ref, np.zeros((1, 16, 16))]).reshape(4, -1)
    v = np.concatenate([fused, np.zeros((1, 16, 16))]).reshape(4, -1)
    mu, sd = z.mean(1, keepdims=True), z.std(1, ddof=1, keepdims=True)
    sd[sd == 0] = 1
    z, v = (z - mu) / sd + 1, (v - mu) / sd + 1
    n = z.shape[1]
    conj = np.array([1, -1, -1, -1])[:, None]
    zv = np.mean([_hamilton(z[:, p], (conj * v)[:, p]) for p in range(n)], axis=0)
    mz, mv = z.mean(1), v.mean(1)
    sig = n / (n - 1) * (zv - _hamilton(mz, conj[:, 0] * mv))
    var = np.sum(z.var(1, ddof=1)) + np.sum(v.var(1, ddof=1))
    q = 2 * np.linalg.norm(sig) / var * 2 * np.linalg.norm(mz) * np.linalg.norm(mv) / (mz @ mz + mv @ mv)
    assert M.q2n(ref, fused, block=16) == pytest.approx(q, rel=1e-10)


def test_evaluate_report_round_trip():
    ref, fused = _pair(4)
    rep = M.evaluate(ref, fused, scale=4, peak="band_max")
    d = rep.to_dict()
    assert d["peak"] == "band_max" and d["valid_pixels"] == 1600
    assert d["psnr"] == pytest.approx(M.psnr(ref, fused, peak="band_max"))
    assert d["ergas"] == pytest.approx(M.ergas(ref, fused, scale=4))


def test_consistency_of_a_perfect_fusion():
    from csakd_qgis.simulation.degradation import blur_decimate, gaussian_psf

    rng = np.random.default_rng(5)
    truth = ndimage.gaussian_filter(rng.random((6, 32, 32)), (0, 1, 1)) + 0.5
    srf = rng.random((3, 6))
    srf /= srf.sum(1, keepdims=True)
    psf = gaussian_psf(4)
    lr, msi = blur_decimate(truth, 4, psf), np.einsum("mc,chw->mhw", srf, truth)
    rep = M.consistency(truth, lr, msi, srf, psf, 4, block=16)
    assert rep.psnr_lr == np.inf and rep.psnr_msi == np.inf
    assert rep.sam_lr == pytest.approx(0, abs=1e-6)
    noisy = M.consistency(truth + 0.05 * rng.standard_normal(truth.shape), lr, msi, srf, psf, 4, block=16)
    assert noisy.psnr_lr < 60 and noisy.qnr < rep.qnr + 1e-12
    assert 0 <= rep.d_lambda < 1 and rep.qnr == pytest.approx((1 - rep.d_lambda) * (1 - rep.d_s))
