import dataclasses
import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from scipy import ndimage

from csakd_qgis.cli import main
from csakd_qgis.errors import RasterReadError
from csakd_qgis.geo.coregister import coregister, open_aligned, warped_cache_mb
from csakd_qgis.geo.grid import plan_grids
from csakd_qgis.io.read import read_info, read_window

LR_T = Affine(30, 0, 366000, 0, -30, 5810000)
MSI_T = Affine(10, 0, 366000, 0, -10, 5810000)
MIX = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 0.5, 0.5]])


def block_mean(cube, s):
    c, h, w = cube.shape
    return cube.reshape(c, h // s, s, w // s, s).mean(axis=(2, 4))


@pytest.fixture
def pair(geotiff, texture):
    """LR-HSI (6 bands, 30 m, 40x40) and HR-MSI (3 bands, 10 m, 120x120) of one scene."""
    def make(shift=(0.0, 0.0), lr_nodata=None):
        hr = texture(120, 120, 6, seed=2).astype(np.float64)
        moved = ndimage.shift(hr, (0, 3 * shift[1], 3 * shift[0]), order=3, mode="reflect")
        lr = block_mean(moved, 3).astype(np.float32)
        if lr_nodata is not None:
            lr[:, :5, :7] = lr_nodata
        msi = np.einsum("mc,chw->mhw", MIX, hr).astype(np.float32)
        lr_path = geotiff("lr.tif", lr, transform=LR_T, nodata=lr_nodata)
        msi_path = geotiff("msi.tif", msi, transform=MSI_T)
        return str(lr_path), str(msi_path), hr
    return make


def test_aligned_inputs_are_read_directly(pair):
    lr_path, msi_path, _ = pair()
    plan = plan_grids(read_info(lr_path), read_info(msi_path))
    assert plan.scale == 3 and (plan.lr.width, plan.lr.height) == (40, 40)
    with open_aligned(lr_path, msi_path, plan) as aligned:
        assert not aligned.lr_warped and not aligned.msi_warped
        data, valid = aligned.read_msi(Window(5, 7, 9, 4))
        np.testing.assert_array_equal(data, read_window(msi_path, Window(5, 7, 9, 4))[0])
        lr, valid = aligned.read_lr(Window(-2, 38, 4, 4), boundless=True)
        assert np.isnan(lr[:, :, :2]).all() and np.isnan(lr[:, 2:, :]).all()
        np.testing.assert_array_equal(valid[:2, 2:], True)
        # MSI averaged onto the LR grid is the 3x3 block mean
        msi_lr, _ = aligned.read_msi_lr(Window(0, 0, 40, 40))
        full, _ = read_window(msi_path)
        np.testing.assert_allclose(msi_lr, block_mean(full.astype(np.float64), 3), rtol=1e-5)


def test_warped_cache_covers_two_blocks_each_way_of_every_band(pair):
    lr_path, msi_path, _ = pair()
    info = read_info(lr_path)
    plan = plan_grids(info, read_info(msi_path))
    assert warped_cache_mb(info, plan.lr) == 0  # read directly
    assert warped_cache_mb(info, plan.lr, (0.01, 0.0)) == 0  # read directly, shifted in memory
    # off the grid by half a pixel: warps 40 x 40 blocks (one each way) of 6 float32 bands: 38 kB, rounded up to 1 MB
    off = dataclasses.replace(info, transform=info.transform * Affine.translation(0.5, 0.0))
    assert warped_cache_mb(off, plan.lr) == 1
    wide = dataclasses.replace(off, count=1200)
    assert warped_cache_mb(wide, plan.lr, (0.01, 0.0)) == -(-40 * 40 * 1200 * 4 // 2**20)


@pytest.mark.parametrize("shift", [(0.3, -0.2), (-0.7, 0.45), (1.3, 0.0)])
def test_shifted_reads_match_gdal_cubic_warp_inside_and_its_footprint(pair, shift):
    lr_path, msi_path, _ = pair(lr_nodata=-9999.0)
    plan = plan_grids(read_info(lr_path), read_info(msi_path))
    with open_aligned(lr_path, msi_path, plan, shift) as aligned:
        assert aligned.lr_warped
        mine, valid = aligned.read_lr(Window(0, 0, 40, 40))
        tile, tile_valid = aligned.read_lr(Window(-3, 30, 12, 13), boundless=True)  # a halo past two edges
    with rasterio.open(lr_path) as src, WarpedVRT(src, crs=plan.lr.crs, width=40, height=40, dtype="float32",
                                                  transform=plan.lr.transform * Affine.translation(*shift),
                                                  resampling=Resampling.cubic) as vrt:
        gdal, gdal_valid = vrt.read(), vrt.dataset_mask() > 0
    assert (valid != gdal_valid).sum() <= 1  # nodata and the footprint's edges as GDAL's warper has them
    inner = np.zeros_like(valid)
    inner[2:-2, 2:-2] = True
    inner &= ndimage.binary_erosion(valid, iterations=3)  # away from the edges and the nodata, where the taps differ
    np.testing.assert_allclose(mine[:, inner], gdal[:, inner], atol=2e-5 * np.abs(gdal[:, inner]).max())
    np.testing.assert_array_equal(tile_valid[:10, 3:], valid[30:, :9])
    xs, ys = np.arange(-3, 9) + shift[0], np.arange(30, 43) + shift[1]  # sample positions in the raster's pixels
    outside = ((ys < -0.5) | (ys > 39.5))[:, None] | ((xs < -0.5) | (xs > 39.5))[None, :]
    assert outside.any() and not tile_valid[outside].any() and np.isnan(tile[:, outside]).all()
    np.testing.assert_allclose(tile[:, :10, 3:], mine[:, 30:, :9], rtol=1e-6)
    with open_aligned(lr_path, msi_path, plan, shift) as aligned, pytest.raises(RasterReadError, match="outside"):
        aligned.read_lr(Window(-3, 30, 12, 13))  # not boundless: as an unshifted read


def test_known_shift_is_recovered_and_corrected(pair, tmp_path):
    lr_path, msi_path, hr = pair(shift=(0.37, -0.21))
    out = tmp_path / "coreg.tif"
    report = coregister(lr_path, msi_path, str(out))
    assert report.shift.reliable and report.shift_applied
    assert report.shift.dx == pytest.approx(0.37, abs=0.1) and report.shift.dy == pytest.approx(-0.21, abs=0.1)
    corrected, _ = read_window(str(out))
    truth = block_mean(hr, 3)
    uncorrected, _ = read_window(lr_path)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    err_after = np.abs(corrected[inner] - truth[inner]).mean()
    err_before = np.abs(uncorrected[inner] - truth[inner]).mean()
    assert err_after < 0.5 * err_before
    assert [b.wavelength_nm for b in read_info(str(out)).bands] == [None] * 6


def test_nodata_regions_stay_nodata(pair, tmp_path):
    lr_path, msi_path, _ = pair(lr_nodata=-9999.0)
    out = tmp_path / "nd.tif"
    report = coregister(lr_path, msi_path, str(out), shift_correction=False)
    assert report.shift is None and not report.shift_applied
    data, valid = read_window(str(out))
    assert not valid[:5, :7].any() and valid[5:, :].all() and valid[:, 7:].all()
    np.testing.assert_array_equal(data[:, 5:, 7:], read_window(lr_path)[0][:, 5:, 7:])


def test_msi_in_other_crs_is_warped(pair, tmp_path):
    lr_path, msi_path, _ = pair()
    with rasterio.open(msi_path) as src:
        msi = src.read()
    dst_t = Affine(10, 0, 4527000, 0, -10, 3261600)
    warped = np.full((3, 140, 140), np.nan, np.float32)
    reproject(msi, warped, src_transform=MSI_T, src_crs="EPSG:32633", dst_transform=dst_t, dst_crs="EPSG:3035",
              resampling=Resampling.bilinear, dst_nodata=np.nan)
    path = tmp_path / "msi_3035.tif"
    with rasterio.open(path, "w", driver="GTiff", width=140, height=140, count=3, dtype="float32",
                       crs="EPSG:3035", transform=dst_t, nodata=np.nan) as ds:
        ds.write(warped)
    plan = plan_grids(read_info(lr_path), read_info(str(path)))
    assert plan.lr.crs.to_epsg() == 3035
    with open_aligned(lr_path, str(path), plan) as aligned:
        assert aligned.lr_warped and not aligned.msi_warped
        lr, lr_valid = aligned.read_lr(Window(0, 0, plan.lr.width, plan.lr.height))
        msi_lr, msi_valid = aligned.read_msi_lr(Window(0, 0, plan.lr.width, plan.lr.height))
    both = lr_valid & msi_valid
    assert both.mean() > 0.5
    # the LR bands 1+2 averaged match the MSI band 1 on the common grid
    diff = np.abs(0.5 * (lr[0] + lr[1]) - msi_lr[0])[both]
    assert np.median(diff) < 0.02


def test_cli_json_and_overwrite(pair, tmp_path, capsys):
    lr_path, msi_path, _ = pair()
    out = str(tmp_path / "cli.tif")
    assert main(["coregister", lr_path, msi_path, out, "--json", "--no-shift-correction"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scale"] == 3 and report["lr_grid"]["width"] == 40 and report["shift"] is None
    assert main(["coregister", lr_path, msi_path, out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["coregister", lr_path, msi_path, out, "--overwrite", "--scale", "3"]) == 0
    assert "scale 3" in capsys.readouterr().out


@pytest.mark.parametrize("shift, offgrid", [((0.0, 0.0), False), ((0.3, -0.2), False), ((0.0, 0.0), True)])
def test_tiles_read_by_row_strips_equal_tiles_read_alone(pair, shift, offgrid):
    """The reader's row strips (plain, shifted in memory, warped) give each tile's own read."""
    from csakd_qgis.fusion.blend import ColumnBlocks, schedule
    from csakd_qgis.fusion.radiometry import Radiometry
    from csakd_qgis.fusion.reader import _read_tile, read_tiles
    from csakd_qgis.fusion.tiling import plan_tiles
    lr_path, msi_path, _ = pair(lr_nodata=-9999.0)
    if offgrid:  # the LR-HSI rotated by 2 degrees: every LR read goes through GDAL's warper
        with rasterio.open(lr_path, "r+") as ds:
            ds.transform = LR_T * Affine.rotation(2.0)
    plan = plan_grids(read_info(lr_path), read_info(msi_path))
    tiles = plan_tiles(plan.lr.width, plan.lr.height, tile=12, overlap=2, halo=3, scale=3)
    blocks = ColumnBlocks.build(tiles, 48, 16)
    order = [(t, b, blocks.visited_before(t.col, b)) for t, b in schedule(tiles, blocks)]
    radiometry = Radiometry(0.5, 2.0, np.full(6, 0.25, np.float32), np.zeros(3, np.float32), ())
    with open_aligned(lr_path, msi_path, plan, shift) as aligned:
        assert aligned.lr_warped == (shift != (0.0, 0.0) or offgrid)
        got = list(read_tiles(aligned, tiles, order, radiometry))
        assert [(t, b) for t, b, *_ in got] == [(t, b) for t, b, _ in order]
        for (tile, _block, carried), (_t, _b, *arrays) in zip(order, got):
            if carried:
                assert arrays == [None, None, None]
                continue
            alone = _read_tile(aligned.read_lr, aligned.read_msi, tile, tiles, radiometry)
            for mine, theirs in zip(arrays, alone):
                np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)
            if not offgrid:
                assert arrays[2].all() != (tile.row == tile.col == 0)  # the LR-HSI's nodata corner is in tile (0, 0)
