"""csakd_qgis.training.data: training scenes from arrays and rasters, with hand-worked values."""

import numpy as np
import pytest
from affine import Affine

from csakd_qgis.errors import InputError
from csakd_qgis.models.card import MsiInfo, SpectralBands
from csakd_qgis.training.data import TrainingData, fit_patch, reference_data, scene_data
from csakd_qgis.training.patches import Scene

WAVELENGTHS = [420.0 + 15.0 * k for k in range(36)]
BAND_TAGS = [{"wavelength": str(w), "fwhm": "15", "wavelength_units": "Nanometers"} for w in WAVELENGTHS]
LR_120M = Affine(120.0, 0.0, 366000.0, 0.0, -120.0, 5810000.0)


# ------------------------------------------------------------------ scene-adaptive (Wald's protocol)


def _lr_cube():
    """LR-HSI ``(4, 16, 12)``: band b, row y holds ``100 (b + 1) + y``."""
    rows = np.arange(16, dtype=np.float32)[:, None]
    return np.stack([np.broadcast_to(100.0 * (b + 1) + rows, (16, 12)) for b in range(4)]).astype(np.float32)


def _msi_cube():
    """HR-MSI ``(3, 64, 48)``: bands constant at 10, 20 and 30."""
    return np.broadcast_to(np.array([10.0, 20.0, 30.0], np.float32)[:, None, None], (3, 64, 48)).copy()


def _scene_files(geotiff, msi=None):
    lr_tags = [{"wavelength": str(450.0 + 50 * b), "wavelength_units": "nm"} for b in range(3)]
    lr_tags.append({"wavelength": "650", "wavelength_units": "nm", "bbl": "0"})
    lr = geotiff("lr.tif", _lr_cube(), transform=LR_120M, band_tags=lr_tags)
    msi_path = geotiff("msi.tif", _msi_cube() if msi is None else msi, nodata=-1.0,
                       band_tags=[{"wavelength": str(w)} for w in (490.0, 560.0, 665.0)],
                       descriptions=("Blue", "Green"))
    return str(lr), str(msi_path)


def test_scene_targets_are_the_original_lr_rows_split_at_the_bottom(geotiff):
    lr_path, msi_path = _scene_files(geotiff)
    data = scene_data(lr_path, msi_path, val_fraction=0.25)

    assert data.scale == 4 and data.protocol == "wald" and data.name == "lr.tif + msi.tif"
    (train,), (val,) = data.train, data.val
    # the degraded scene has 16 / 4 = 4 LR rows: one (a quarter) is held out, at the bottom
    assert train.lr.shape == (4, 3, 3) and val.lr.shape == (4, 1, 3)
    level = np.percentile(_lr_cube(), 99)  # the robust level: 99th percentile of the LR-HSI
    np.testing.assert_allclose(train.ref, _lr_cube()[:, :12] / level, rtol=1e-6)
    np.testing.assert_allclose(val.ref, _lr_cube()[:, 12:] / level, rtol=1e-6)
    # the MSI degraded to the LR grid stays constant; its own level is the largest band, 30
    for scene, rows in ((train, 12), (val, 4)):
        assert scene.msi.shape == (3, rows, 12) and scene.valid.all()
        np.testing.assert_allclose(scene.msi, np.broadcast_to(np.array([1 / 3, 2 / 3, 1.0])[:, None, None],
                                                              (3, rows, 12)), rtol=1e-6)


def test_scene_metadata_comes_from_the_rasters(geotiff):
    data = scene_data(*_scene_files(geotiff))
    assert data.lr_bands == SpectralBands((450.0, 500.0, 550.0, 650.0), (), (True, True, True, False))
    assert data.msi == MsiInfo(None, ("Blue", "Green", "B3"), (490.0, 560.0, 665.0))
    assert (data.bands, data.msi_bands) == (4, 3)


def test_msi_nodata_invalidates_only_the_lr_pixel_whose_block_holds_it(geotiff):
    msi = _msi_cube()
    msi[:, 21, 6] = -1.0  # nodata, in the 4 x 4 block of LR pixel (5, 1)
    data = scene_data(*_scene_files(geotiff, msi), val_fraction=0.0)
    assert data.val == ()
    valid = data.train[0].valid
    assert (~valid).sum() == 1 and not valid[5, 1]


def test_scene_refuses_grids_that_are_not_aligned(geotiff, tmp_path):
    lr_path, _ = _scene_files(geotiff)
    wrong = str(geotiff("wrong.tif", _msi_cube()[:, :60]))
    with pytest.raises(InputError, match="co-register"):
        scene_data(lr_path, wrong)


# ------------------------------------------------------------------ supervised (simulated from a reference)


def _spectrum():
    return np.linspace(0.1, 0.45, len(WAVELENGTHS), dtype=np.float32)


def _reference(geotiff, cube=None):
    if cube is None:
        cube = np.broadcast_to(_spectrum()[:, None, None], (36, 16, 16)).copy()
    return str(geotiff("ref.tif", cube, band_tags=BAND_TAGS, nodata=-1.0))


def test_reference_data_of_a_constant_scene_is_its_spectrum_over_its_robust_level(geotiff):
    data = reference_data(_reference(geotiff), sensor="sentinel2", bands=[" B2", "B8 "], scale=2,
                          val_fraction=0.25)
    assert data.protocol == "simulation" and data.name == "ref.tif" and data.scale == 2
    assert data.msi.sensor == "sentinel2" and data.msi.band_names == ("B2", "B8")
    assert data.lr_bands.wavelengths_nm == pytest.approx(WAVELENGTHS)
    assert data.lr_bands.fwhm_nm == pytest.approx([15.0] * 36)
    (train,), (val,) = data.train, data.val
    assert train.lr.shape == (36, 6, 8) and val.lr.shape == (36, 2, 8)  # 8 LR rows, a quarter held out
    level = np.percentile(np.broadcast_to(_spectrum()[:, None, None], (36, 8, 8)), 99)
    expected = (_spectrum() / level)[:, None, None]
    for scene in (train, val):
        np.testing.assert_allclose(scene.lr, np.broadcast_to(expected, scene.lr.shape), rtol=1e-5)
        np.testing.assert_allclose(scene.ref, np.broadcast_to(expected, scene.ref.shape), rtol=1e-5)
        assert scene.valid.all()
        # each MSI band is constant; divided by its own level, the brighter band (B8) is 1
        np.testing.assert_allclose(scene.msi.std(axis=(1, 2)), 0.0, atol=1e-6)
        assert scene.msi[1].max() == pytest.approx(1.0, rel=1e-5) and 0 < scene.msi[0].max() < 1


def test_reference_nodata_invalidates_its_whole_lr_block(geotiff):
    cube = np.broadcast_to(_spectrum()[:, None, None], (36, 16, 16)).copy()
    cube[:, 3, 5] = -1.0  # nodata inside the 2 x 2 block of LR pixel (1, 2): HR rows 2-3, columns 4-5
    data = reference_data(_reference(geotiff, cube), sensor="sentinel2", bands=["B2"], scale=2,
                          val_fraction=0.0)
    valid = data.train[0].valid
    expected = np.ones((16, 16), dtype=bool)
    expected[2:4, 4:6] = False
    np.testing.assert_array_equal(valid, expected)
    assert np.isfinite(data.train[0].ref).all()  # nodata is stored as 0 under the mask


def test_reference_without_wavelengths_is_refused(geotiff):
    bare = str(geotiff("bare.tif", np.ones((3, 8, 8), dtype=np.float32)))
    with pytest.raises(InputError, match="wavelengths"):
        reference_data(bare, sensor="sentinel2", bands=["B2"], scale=2)


# ------------------------------------------------------------------ splitting and patch size


def _data(*hr_sides, scale=2):
    scenes = tuple(Scene(np.zeros((1, h // scale, w // scale), np.float32), np.zeros((1, h, w), np.float32),
                         np.zeros((1, h, w), np.float32), np.ones((h, w), bool), scale) for h, w in hr_sides)
    return TrainingData(scenes, (), SpectralBands((500.0,)), MsiInfo(None, ("a",)), scale, "test")


def test_fit_patch_takes_the_largest_multiple_of_the_scale_that_fits_every_scene():
    assert fit_patch(13, _data((40, 40))) == 12
    assert fit_patch(64, _data((40, 30), (24, 36))) == 24
    assert fit_patch(64, _data((20, 44), scale=4)) == 20
    with pytest.raises(InputError, match="too small"):
        fit_patch(32, _data((4, 40), scale=4))  # one LR pixel of patch is not enough


def test_holding_out_every_row_is_refused():
    cube = np.ones((36, 8, 8), np.float32)
    with pytest.raises(InputError, match="no training rows"):
        TrainingData.from_reference(cube, WAVELENGTHS, sensor="sentinel2", bands=["B2"], scale=2, val_fraction=1.0)
