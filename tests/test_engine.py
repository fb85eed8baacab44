import os

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from csakd_qgis.engine import fuse
from csakd_qgis.errors import Cancelled, GridError
from csakd_qgis.methods import BicubicMethod
from csakd_qgis.progress import Reporter
from csakd_qgis.raster_io import read_info, read_window

torch.set_num_threads(1)
S = 3
LR_T = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)


def _write(path, data, transform, nodata=None, tags=()):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32633", transform=transform, nodata=nodata) as ds:
        ds.write(data)
        for i, t in enumerate(tags, start=1):
            ds.update_tags(i, **t)
    return str(path)


@pytest.fixture
def pair(tmp_path):
    """48 x 48 LR (5 bands, wavelengths) and 144 x 144 MSI (3 bands) with smooth content, scale 3."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    lr = np.stack([0.2 + 0.1 * k + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) for k in range(5)])
    lr = (lr + 0.01 * rng.random(lr.shape)).astype(np.float32)
    msi = (0.3 + 0.2 * rng.random((3, 144, 144))).astype(np.float32)
    tags = [{"wavelength": str(450.0 + 50 * k), "wavelength_units": "Nanometers", "fwhm": "10"} for k in range(5)]
    lr_path = _write(tmp_path / "lr.tif", lr, LR_T, tags=tags)
    msi_path = _write(tmp_path / "msi.tif", msi, LR_T * Affine.scale(1 / S))
    return lr_path, msi_path, lr, msi


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(masked=False).astype(np.float64)


@pytest.mark.parametrize("method", ["bicubic", "gsa"])
def test_tiled_equals_whole_image(pair, tmp_path, method):
    lr_path, msi_path, _lr, _msi = pair
    whole = fuse(lr_path, msi_path, str(tmp_path / "whole.tif"), method=method, tile=48, overlap=0, device="cpu")
    tiled = fuse(lr_path, msi_path, str(tmp_path / "tiled.tif"), method=method, tile=10, overlap=2, device="cpu",
                 batch_size=3, block_width=60)  # column blocks of 2 tiles: ghost columns resolve the seams
    assert (whole.tiles_total, tiled.tiles_total, tiled.tiles_recomputed) == (1, 25, 10)
    a, b = _read(whole.output), _read(tiled.output)
    assert a.shape == (5, 144, 144)
    np.testing.assert_allclose(b, a, rtol=0, atol=5e-6 * np.abs(a).max())
    if method == "bicubic":  # HR pixel 3i + 1 sits on LR pixel i's centre
        np.testing.assert_allclose(a[:, 1::3, 1::3], _lr, atol=1e-5)


@pytest.mark.slow
def test_network_tiled_matches_whole_image(pair, tmp_path):
    models = pytest.importorskip("csakd_qgis.models")
    if not hasattr(models, "build_model"):
        pytest.skip("csakd_qgis.models.build_model is not available yet")
    torch.manual_seed(0)
    cfg = models.ModelConfig(bands=5, msi_bands=3, scale=S, nf=8, gc=4, blocks=(1, 1, 1, 1), lr_groups=1,
                             fusion="csa_invariant", paper_mode=False, upsample="bilinear", head="light")
    net = models.build_model(cfg).eval()
    lr_path, msi_path, _lr, _msi = pair
    whole = fuse(lr_path, msi_path, str(tmp_path / "w.tif"), method="csakd", model=net, tile=48, overlap=0,
                 device="cpu")
    tiled = fuse(lr_path, msi_path, str(tmp_path / "t.tif"), method="csakd", model=net, tile=24, overlap=4,
                 device="cpu")
    a, b = _read(whole.output), _read(tiled.output)
    psnr = 10 * np.log10(a.max() ** 2 / np.mean((a - b) ** 2))
    assert psnr >= 50.0


def test_nodata_stays_nodata_and_empty_tiles_are_skipped(tmp_path):
    lr = np.full((2, 48, 48), 100.0, np.float32)
    lr[:, :24, :24] = -9999.0  # LR nodata block
    lr[:, 40, 40] = -9999.0
    msi = np.full((2, 144, 144), 50.0, np.float32)
    msi[:, 100:103, 7] = -1.0
    lr_path = _write(tmp_path / "lr.tif", lr, LR_T, nodata=-9999.0)
    msi_path = _write(tmp_path / "msi.tif", msi, LR_T * Affine.scale(1 / S), nodata=-1.0)
    report = fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", tile=8, overlap=2, device="cpu")
    # cores of 8 LR px, windows grown by 2: the tiles of cores (0..1, 0..1) lie inside the 24 x 24 hole
    assert (report.tiles_total, report.tiles_skipped) == (36, 4)
    data, valid = read_window(report.output)
    expected = np.ones((144, 144), bool)
    expected[:72, :72] = False
    expected[120:123, 120:123] = False
    expected[100:103, 7] = False
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_allclose(data[:, valid], 100.0, rtol=1e-6)


def test_metadata_and_georeferencing_round_trip(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair
    report = fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", device="cpu")
    info = read_info(report.output)
    assert [b.wavelength_nm for b in info.bands] == [450.0, 500.0, 550.0, 600.0, 650.0]
    assert [b.fwhm_nm for b in info.bands] == [10.0] * 5
    assert info.transform.almost_equals(LR_T * Affine.scale(1 / S))
    assert (info.width, info.height, info.crs.to_epsg()) == (144, 144, 32633)
    assert report.scale == S and report.grid.width == 144


def test_int16_output_with_scale(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair
    ref = fuse(lr_path, msi_path, str(tmp_path / "f.tif"), method="bicubic", device="cpu")
    out = fuse(lr_path, msi_path, str(tmp_path / "i.tif"), method="bicubic", device="cpu", dtype="int16",
               output_scale=1e-4)
    with rasterio.open(out.output) as ds:
        stored = ds.read()
        assert ds.dtypes[0] == "int16" and ds.scales[0] == pytest.approx(1e-4)
    np.testing.assert_array_equal(stored, np.rint(_read(ref.output) * 1e4).astype(np.int16))


def test_error_mid_run_leaves_destination_untouched(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair
    dest = tmp_path / "o.tif"
    dest.write_bytes(b"old result")

    class Failing(BicubicMethod):
        calls = 0

        def predict(self, lr, msi):
            Failing.calls += 1
            if Failing.calls == 3:
                raise ValueError("boom")
            return super().predict(lr, msi)

    with pytest.raises(ValueError, match="boom"):
        fuse(lr_path, msi_path, str(dest), method=Failing(S), tile=8, overlap=2, batch_size=2, device="cpu",
             overwrite=True)
    assert dest.read_bytes() == b"old result"
    assert sorted(os.listdir(tmp_path)) == ["lr.tif", "msi.tif", "o.tif"]


def test_cancel_writes_nothing(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair
    polls = []

    def cancelled():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(Cancelled):
        fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", tile=8, overlap=2, device="cpu",
             reporter=Reporter(is_cancelled=cancelled))
    assert sorted(os.listdir(tmp_path)) == ["lr.tif", "msi.tif"]


def test_out_of_memory_halves_batch_then_tile(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair

    class Oom(BicubicMethod):
        def predict(self, lr, msi):
            if lr.shape[0] > 1 or lr.shape[2] > 20:
                raise RuntimeError("CUDA out of memory")
            return super().predict(lr, msi)

    messages = []
    report = fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method=Oom(S), tile=24, overlap=2, batch_size=2,
                  device="cpu", reporter=Reporter(progress=lambda f, m: messages.append(m)))
    assert report.tile_size == 12
    assert "out of memory: batch size reduced to 1" in report.notes
    assert "out of memory with single tiles: tile size reduced to 12 LR pixels" in messages
    ref = fuse(lr_path, msi_path, str(tmp_path / "r.tif"), method="bicubic", tile=12, overlap=2, device="cpu")
    np.testing.assert_array_equal(_read(report.output), _read(ref.output))


def test_grids_that_do_not_nest_are_refused(pair, tmp_path):
    lr_path, _msi_path, _lr, msi = pair
    shifted = _write(tmp_path / "m2.tif", msi, LR_T * Affine.translation(0.5, 0) * Affine.scale(1 / S))
    with pytest.raises(GridError, match="pixel edges"):
        fuse(lr_path, shifted, str(tmp_path / "o.tif"), method="bicubic", device="cpu")
