import numpy as np
import pytest
from scipy import ndimage

from csakd_qgis.errors import InputError
from csakd_qgis.geo.shift import estimate_shift, fit_band_mixing


def block_mean(cube, s):
    c, h, w = cube.shape
    return cube.reshape(c, h // s, s, w // s, s).mean(axis=(2, 4))


@pytest.fixture(scope="module")
def pines(request):
    from conftest import SHARED_DATA
    path = SHARED_DATA / "indian_pines" / "Indian_pines_corrected.npy"
    if not path.exists():
        pytest.skip("Indian Pines cube not available")
    return np.load(path).astype(np.float64).transpose(2, 0, 1)[:, :144, :144]


@pytest.mark.parametrize("scale,dx,dy", [(4, 0.37, -0.21), (2, -0.8, 0.45)])
def test_recovers_known_subpixel_shift(pines, scale, dx, dy):
    # LR content displaced by (+dx, +dy) LR pixels: lr(col, row) = msi(col - dx, row - dy)
    shifted = ndimage.shift(pines, (0, dy * scale, dx * scale), order=3, mode="reflect")
    lr = block_mean(shifted, scale)
    msi_lr = block_mean(np.stack([pines[i:i + 50].mean(0) for i in range(0, 200, 50)]), scale)
    weights = fit_band_mixing(lr, msi_lr)
    est = estimate_shift(np.einsum("mc,chw->mhw", weights, lr), msi_lr)
    assert est.reliable
    assert est.dx == pytest.approx(dx, abs=0.1) and est.dy == pytest.approx(dy, abs=0.1)
    assert est.confidence > 3
    assert len(est.per_band) == 4


def test_nnls_mixing_recovers_known_weights():
    rng = np.random.default_rng(3)
    hsi = rng.random((6, 20, 20))
    truth = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0.2, 0.3, 0.5, 0]])
    msi = np.einsum("mc,chw->mhw", truth, hsi)
    hsi[5] = np.nan  # a bad band: weight 0
    np.testing.assert_allclose(fit_band_mixing(hsi, msi), truth, atol=1e-8)


def test_integer_shift_of_smooth_texture(texture):
    scene = texture(64, 64, 3)
    moved = np.roll(scene, (2, -3), axis=(1, 2))
    est = estimate_shift(moved, scene)
    assert (est.dx, est.dy) == pytest.approx((-3.0, 2.0), abs=0.1)


def test_unrelated_images_are_not_corrected():
    rng = np.random.default_rng(0)
    est = estimate_shift(rng.random((4, 64, 64)), rng.random((4, 64, 64)))
    assert not est.reliable and (est.dx, est.dy) == (0.0, 0.0)
    assert "too weak" in est.message


def test_invalid_inputs():
    with pytest.raises(InputError, match="too small"):
        estimate_shift(np.ones((1, 4, 4)), np.ones((1, 4, 4)))
    valid = np.zeros((16, 16), bool)
    with pytest.raises(InputError, match="valid"):
        estimate_shift(np.ones((1, 16, 16)), np.ones((1, 16, 16)), valid)
