"""Data preparation of bench/quality_scenes.py: splits, disjoint regions and test-raster grids (no training)."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))

import quality_scenes as qs  # noqa: E402

from csakd_qgis.io.read import read_info  # noqa: E402

needs_data = pytest.mark.skipif(not (DATA / "indian_pines").exists() or not (DATA / "aviris_ng").exists(),
                                reason="shared real data (../shared/data) not present")


def coverage(scene):
    """Per source, how many of the train / validation / test crops cover each pixel."""
    counts = {name: np.zeros(src.cube.shape[1:], dtype=int) for name, src in scene.sources.items()}
    for crop in (*scene.train, *scene.val, scene.test):
        counts[crop.source][crop.rows[0]:crop.rows[1], crop.cols[0]:crop.cols[1]] += 1
    return counts


def read(path):
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float64), ds.transform, ds.crs


def test_bad_bands_rule():
    cube = np.full((8, 2, 3), 2.0)
    cube[0, 1, 2] = 0.0  # a zero value
    cube[1, 0, 0] = -0.1  # a negative radiance
    cube[2] = 0.03  # pooled mean (6 * 0.03 + 0.03) / 7 = 0.03 < 2 % of the median good-band mean (2.0)
    cube[3] = 0.05  # 0.05 >= 0.04: kept
    other = np.full((8, 1, 1), 2.0)
    other[2, 0, 0] = 0.03
    other[3, 0, 0] = 0.05
    other[4, 0, 0] = np.nan  # non-finite in the second cube only
    assert qs.bad_bands([cube, other]).tolist() == [True, True, True, False, True, False, False, False]


@needs_data
def test_indian_pines_split_and_test_rasters(tmp_path):
    scene = qs.indian_pines()
    assert all(c.max() == 1 for c in coverage(scene).values())  # no pixel in two regions
    assert coverage(scene)["indian_pines"].sum() == 144 * 144  # and together they cover the crop
    prep = qs.prepare(scene, tmp_path)
    (train,), (val,) = prep.data.train, prep.data.val
    assert train.lr.shape == (200, 24, 36) and train.msi.shape == (4, 96, 144) and train.ref.shape == (200, 96, 144)
    assert val.lr.shape == (200, 4, 36) and val.ref.shape == (200, 16, 144)
    ref, ref_t, crs = read(prep.reference)
    lr, lr_t, lr_crs = read(prep.lr_hsi)
    msi, msi_t, _ = read(prep.hr_msi)
    assert ref.shape == (200, 32, 144) and lr.shape == (200, 8, 36) and msi.shape == (4, 32, 144)
    assert ref_t == Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 4480000.0 - 112 * 20.0) == msi_t
    assert lr_t == ref_t * Affine.scale(4) and crs == lr_crs
    raw = np.load(DATA / "indian_pines" / "Indian_pines_corrected.npy")
    np.testing.assert_allclose(ref, raw[112:144, :144].transpose(2, 0, 1) / 10000.0, rtol=1e-6)
    # the LR-HSI is a blurred, decimated, noisy copy: close to the 4x4 block means, not equal to them
    blocks = ref.reshape(200, 8, 4, 36, 4).mean(axis=(2, 4))
    rel = np.abs(lr - blocks).mean() / blocks.mean()
    assert 0.001 < rel < 0.1


@needs_data
def test_aviris_ng_split_bad_bands_and_test_rasters(tmp_path):
    scene = qs.aviris_ng()
    cov = coverage(scene)
    assert cov["georeferenced"].shape == (24, 30) and cov["georeferenced"].max() == 1
    assert cov["georeferenced"].sum() == 24 * 30 and cov["small"].sum() == 100
    wl = np.array(scene.sources["georeferenced"].wavelengths_nm)
    good = np.array(scene.good)
    assert good[(wl > 400) & (wl < 1300)].all()
    assert not good[(wl > 1355) & (wl < 1410)].any() and not good[(wl > 1815) & (wl < 1935)].any()
    prep = qs.prepare(scene, tmp_path)
    big, small = prep.data.train
    assert big.lr.shape == (425, 6, 10) and big.ref.shape == (425, 12, 20)
    assert small.lr.shape == (425, 5, 5) and small.msi.shape == (4, 10, 10)
    assert prep.data.val[0].lr.shape == (425, 6, 5)
    ref, ref_t, crs = read(prep.reference)
    lr, lr_t, _ = read(prep.lr_hsi)
    msi, msi_t, _ = read(prep.hr_msi)
    assert ref.shape == (425, 12, 30) and lr.shape == (425, 6, 15) and msi.shape == (4, 12, 30)
    assert crs.to_epsg() == 32611
    assert ref_t.almost_equals(Affine(15.0, 0.0, 353128.751647949, 0.0, -15.0, 3813729.76806641 - 12 * 15.0))
    assert lr_t.almost_equals(ref_t * Affine.scale(2)) and msi_t == ref_t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(DATA / "aviris_ng" / "ang20160910t185702_2rdn_img") as ds:
            raw = ds.read(window=((12, 24), (0, 30))).astype(np.float64)
    np.testing.assert_allclose(ref, raw, rtol=1e-6)
    assert tuple(b.good for b in read_info(str(prep.reference)).bands) == scene.good  # metrics skip bad bands
