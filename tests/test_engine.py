import os

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pipeline_fakes import write_geotiff
from rasterio.windows import Window

from csakd_qgis.errors import Cancelled
from csakd_qgis.fusion.engine import fuse
from csakd_qgis.fusion.methods import BicubicMethod
from csakd_qgis.io.read import read_info, read_window
from csakd_qgis.progress import Reporter

torch.set_num_threads(1)
S = 3
LR_T = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)


@pytest.fixture
def pair(tmp_path):
    """48 x 48 LR (5 bands, wavelengths) and 144 x 144 MSI (3 bands) with smooth content, scale 3."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    lr = np.stack([0.2 + 0.1 * k + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) for k in range(5)])
    lr = (lr + 0.01 * rng.random(lr.shape)).astype(np.float32)
    msi = (0.3 + 0.2 * rng.random((3, 144, 144))).astype(np.float32)
    tags = [{"wavelength": str(450.0 + 50 * k), "wavelength_units": "Nanometers", "fwhm": "10"} for k in range(5)]
    lr_path = write_geotiff(tmp_path / "lr.tif", lr, LR_T, tags=tags)
    msi_path = write_geotiff(tmp_path / "msi.tif", msi, LR_T * Affine.scale(1 / S))
    return lr_path, msi_path, lr, msi


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(masked=False).astype(np.float64)


@pytest.mark.parametrize("method", ["bicubic", "gsa"])
def test_tiled_equals_whole_image(pair, tmp_path, method):
    lr_path, msi_path, _lr, _msi = pair
    whole = fuse(lr_path, msi_path, str(tmp_path / "whole.tif"), method=method, tile=48, overlap=0, device="cpu")
    # column blocks of 64 HR px over 32-px output blocks: tile columns reach into (0,1,2), (1,2,3,4), (4)
    tiled = fuse(lr_path, msi_path, str(tmp_path / "tiled.tif"), method=method, tile=10, overlap=2, device="cpu",
                 batch_size=3, block_width=64, output_block=32)
    assert (whole.tiles_total, tiled.tiles_total, tiled.tiles_recomputed, tiled.tiles_carried) == (1, 25, 0, 15)
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
    lr_path = write_geotiff(tmp_path / "lr.tif", lr, LR_T, nodata=-9999.0)
    msi_path = write_geotiff(tmp_path / "msi.tif", msi, LR_T * Affine.scale(1 / S), nodata=-1.0)
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


def _scene(size, bands, seed):
    """Smooth random texture ``(bands, size, size)`` float64, values in about [0.05, 0.65]."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    fields = []
    for _ in range(2):
        f = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-(fx**2 + fy**2) / 0.0128)))
        fields.append((f - f.min()) / np.ptp(f))
    w = np.linspace(0, 1, bands)[:, None, None]
    return 0.05 + 0.6 * (w * fields[0] + (1 - w) * fields[1])


def _block_mean(cube, s):
    c, h, w = cube.shape
    return cube.reshape(c, h // s, s, w // s, s).mean(axis=(2, 4))


@pytest.fixture
def shifted_pair(tmp_path):
    """LR-HSI (6 bands, 48 x 48, 30 m) made from a shifted HR scene, HR-MSI (3 band pairs) of the unshifted one."""
    from scipy import ndimage

    def make(shift):
        hr = _scene(144, 6, 3)
        moved = ndimage.shift(hr, (0, S * shift[1], S * shift[0]), order=3, mode="reflect")
        lr = _block_mean(moved, S).astype(np.float32)
        msi = np.stack([hr[0:2].mean(0), hr[2:4].mean(0), hr[4:6].mean(0)]).astype(np.float32)
        return (write_geotiff(tmp_path / "lr.tif", lr, LR_T),
                write_geotiff(tmp_path / "msi.tif", msi, LR_T * Affine.scale(1 / S)), hr)
    return make


@pytest.mark.parametrize("method", ["bicubic", "gsa"])
def test_known_shift_is_estimated_and_corrected(shifted_pair, tmp_path, method):
    lr_path, msi_path, truth = shifted_pair((0.4, -0.25))
    on = fuse(lr_path, msi_path, str(tmp_path / "on.tif"), method=method, device="cpu")
    off = fuse(lr_path, msi_path, str(tmp_path / "off.tif"), method=method, device="cpu", shift_correction=False)
    assert on.shift_reliable
    assert on.shift[0] == pytest.approx(0.4, abs=0.05) and on.shift[1] == pytest.approx(-0.25, abs=0.05)
    assert not off.shift_corrected and "not estimated" in off.shift_message
    inner = (slice(None), slice(12, -12), slice(12, -12))
    err_on = np.abs(_read(on.output)[inner] - truth[inner]).mean()
    err_off = np.abs(_read(off.output)[inner] - truth[inner]).mean()
    assert err_on < 0.8 * err_off
    if method == "bicubic":  # the reads are resampled by the shift
        assert on.shift_corrected and on.degradation["offset"] == pytest.approx([0.0, 0.0], abs=0.05)
    else:  # the fit takes the offset into account and the LR-HSI is not resampled
        assert not on.shift_corrected and any("taken into the fit of gsa" in n for n in on.notes)
        assert on.degradation["offset"] == pytest.approx([0.4, -0.25], abs=0.05)


def test_small_reliable_shift_is_corrected_for_bicubic(shifted_pair, tmp_path):
    lr_path, msi_path, _truth = shifted_pair((0.03, 0.0))
    report = fuse(lr_path, msi_path, str(tmp_path / "out.tif"), method="bicubic", device="cpu")
    assert report.shift[0] == pytest.approx(0.03, abs=0.02)
    assert report.shift_corrected and report.degradation["offset"] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert "left uncorrected" not in report.shift_message


def test_the_batch_follows_the_method_device_unless_given(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair

    class OnGpu(BicubicMethod):  # computes on the CPU, but says where a network would run
        device = torch.device("cuda")

    sizes = {}
    for name, method in (("cpu", BicubicMethod(S)), ("gpu", OnGpu(S))):
        calls = []
        predict = method.predict
        method.predict = lambda lr, msi, p=predict, c=calls: c.append(lr.shape[0]) or p(lr, msi)
        report = fuse(lr_path, msi_path, str(tmp_path / f"{name}.tif"), method=method, tile=10, overlap=2,
                      device="cpu", shift_correction=False)
        sizes[name] = (report.batch_size, max(calls))
    assert sizes == {"cpu": (1, 1), "gpu": (4, 4)}


def test_report_names_method_counts_and_summary(pair, tmp_path):
    lr_path, msi_path, _lr, _msi = pair
    report = fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", tile=10, overlap=2, batch_size=3,
                  device="cpu", block_width=64, output_block=32, shift_correction=False)
    assert (report.method, report.model, report.batch_size, report.halo) == ("bicubic", "", 3, 2)
    lines = report.summary_lines()
    assert lines[0].endswith("144 x 144 pixels of 10 in EPSG:32633")
    assert lines[1].startswith("scale 3") and "not estimated" in lines[2]
    assert lines[3].startswith("tiles: 25 of 10 LR px (halo 2), 0 empty, 0 recomputed and 15 carried across")
    assert "bicubic on cpu, batch size 3" in lines[4] and lines[5].startswith("degradation from the pair: PSF sigma")
    assert lines[6].startswith("time ")


def test_empty_ghost_tiles_are_counted_once(tmp_path):
    lr = np.full((1, 40, 40), 100.0, np.float32)
    lr[:, :, :20] = -9999.0  # left half empty: tile column 0 (LR windows 0..12) holds no valid pixel
    lr_path = write_geotiff(tmp_path / "lr.tif", lr, LR_T, nodata=-9999.0)
    msi_path = write_geotiff(tmp_path / "msi.tif", np.ones((1, 120, 120), np.float32), LR_T * Affine.scale(1 / S))
    # HR windows of the tile columns: 0..36, 24..66, 54..96, 84..120; blocks of 32 px visit columns
    # (0, 1), (0, 1, 2), (1, 2, 3), (3): 9 of 4 per row; empty column 0 is visited twice, skipped once; the
    # 5 later visits per row are served by the seam carry
    report = fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", tile=10, overlap=2, device="cpu",
                  block_width=32, output_block=32, shift_correction=False)
    assert (report.tiles_total, report.tiles_recomputed, report.tiles_carried, report.tiles_skipped) == (16, 0, 20, 4)
    data, valid = read_window(report.output)
    np.testing.assert_array_equal(valid, np.broadcast_to(np.arange(120) >= 60, (120, 120)))
    np.testing.assert_allclose(data[:, valid], 100.0, rtol=1e-6)


def _reproject_to(path, data, src_t, src_crs, dst_crs, dst_t, shape, tmp_path, name):
    from rasterio.warp import Resampling, reproject
    out = np.full((data.shape[0],) + shape, np.nan, np.float32)
    reproject(data, out, src_transform=src_t, src_crs=src_crs, dst_transform=dst_t, dst_crs=dst_crs,
              resampling=Resampling.bilinear, dst_nodata=np.nan)
    with rasterio.open(tmp_path / name, "w", driver="GTiff", width=shape[1], height=shape[0], count=out.shape[0],
                       dtype="float32", crs=dst_crs, transform=dst_t, nodata=np.nan) as ds:
        ds.write(out)
    return str(tmp_path / name)


def test_msi_in_another_crs(shifted_pair, tmp_path):
    lr_path, msi_path, truth = shifted_pair((0.0, 0.0))
    msi = _read(msi_path).astype(np.float32)
    dst_t = Affine(10, 0, 4527000, 0, -10, 3261600)
    msi_3035 = _reproject_to(msi_path, msi, LR_T * Affine.scale(1 / S), "EPSG:32633", "EPSG:3035", dst_t,
                             (170, 170), tmp_path, "msi_3035.tif")
    report = fuse(lr_path, msi_3035, str(tmp_path / "o.tif"), method="bicubic", device="cpu",
                  shift_correction=False)
    info = read_info(report.output)
    assert info.crs.to_epsg() == 3035 and info.res == pytest.approx((10.0, 10.0))
    assert report.scale == 3 and any("LR-HSI reprojected from EPSG:32633 to EPSG:3035" in n for n in report.notes)
    data, valid = read_window(report.output)
    assert valid.mean() > 0.5
    # the output has the MSI's pixels: fused bands 0 + 1 averaged match MSI band 0 (their spectral mean)
    col, row = (~Affine(*read_info(msi_3035).transform[:6])) * (info.transform.c, info.transform.f)
    assert (col, row) == pytest.approx((round(col), round(row)), abs=1e-6)
    msi_out, msi_valid = read_window(msi_3035, Window(round(col), round(row), info.width, info.height))
    both = valid & msi_valid
    assert both.mean() > 0.5
    diff = np.abs(0.5 * (data[0] + data[1]) - msi_out[0])[both]
    assert np.median(diff) < 0.02


def test_geographic_lr_input(shifted_pair, tmp_path):
    lr_path, msi_path, _truth = shifted_pair((0.0, 0.0))
    lr = _read(lr_path).astype(np.float32)
    geo_t = Affine(0.0004, 0, 13.0285, 0, -0.00027, 52.4245)
    lr_geo = _reproject_to(lr_path, lr, LR_T, "EPSG:32633", "EPSG:4326", geo_t, (60, 60), tmp_path, "lr_geo.tif")
    report = fuse(lr_geo, msi_path, str(tmp_path / "o.tif"), method="bicubic", device="cpu",
                  shift_correction=False)
    assert read_info(report.output).crs.to_epsg() == 32633
    assert any("LR-HSI reprojected from EPSG:4326 to EPSG:32633" in n for n in report.notes)
    assert report.scale == 3


def test_non_integer_ratio_gives_scale_3_and_a_note(pair, tmp_path):
    lr_path, _msi_path, _lr, _msi = pair
    msi = np.random.default_rng(4).random((3, 160, 160)).astype(np.float32) + 0.2
    msi_9m = write_geotiff(tmp_path / "msi9.tif", msi, Affine(9.0, 0, 366000.0, 0, -9.0, 5810000.0))
    report = fuse(lr_path, msi_9m, str(tmp_path / "o.tif"), method="gsa", device="cpu", shift_correction=False)
    assert report.scale == 3 and report.grid.transform[0] == pytest.approx(10.0)
    assert any("using scale 3" in n for n in report.notes)
    assert (report.grid.width, report.grid.height) == (144, 144)


def test_run_gets_a_small_gdal_cache_for_sampling_a_sized_one_for_tiles_and_restores_it(pair, tmp_path,
                                                                                          monkeypatch):
    gdal = pytest.importorskip("osgeo.gdal")
    from csakd_qgis.fusion import scene
    from csakd_qgis.fusion.plan import WRITE_CACHE_MB
    from csakd_qgis.io.read import BLOCK_CACHE_MB, MAX_BLOCK_CACHE_MB
    lr_path, msi_path, _lr, _msi = pair
    seen = {"shift": [], "sample": [], "predict": []}

    def spy(stage, function):
        def wrapped(*args, **kwargs):
            seen[stage].append(gdal.GetCacheMax())  # process-wide: the reader and writer threads see the same
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(scene, "measure_shift", spy("shift", scene.measure_shift))
    monkeypatch.setattr(scene, "sample_scene", spy("sample", scene.sample_scene))

    class Probe(BicubicMethod):
        predict = spy("predict", BicubicMethod.predict)

    before = gdal.GetCacheMax()
    fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method=Probe(S), tile=24, overlap=2, device="cpu")
    # the default cache (5 % of the RAM) kept every input block the samples touched: peak RSS grew with the raster;
    # rasterio.Env(GDAL_CACHEMAX=n) takes bytes: passing megabytes there once left GDAL a cache of ~200 bytes
    assert set(seen["shift"]) == set(seen["sample"]) == {BLOCK_CACHE_MB * 2**20}
    (tiles,) = set(seen["predict"])  # test_tiles_run_under_a_block_cache_sized_for_a_row_of_tiles: its size
    assert WRITE_CACHE_MB * 2**20 < tiles <= MAX_BLOCK_CACHE_MB * 2**20 and tiles != BLOCK_CACHE_MB * 2**20
    assert BLOCK_CACHE_MB * 2**20 != before and gdal.GetCacheMax() == before


def test_tile_halo_default_exact_and_explicit():
    from csakd_qgis.errors import InputError
    from csakd_qgis.fusion.methods import NetworkMethod
    from csakd_qgis.fusion.plan import NETWORK_HALO, tile_halo
    from csakd_qgis.options import FuseOptions
    net = NetworkMethod(torch.nn.Identity(), scale=S, halo=36)
    assert tile_halo(net, None) == min(36, NETWORK_HALO) and tile_halo(net, "exact") == 36
    assert tile_halo(NetworkMethod(torch.nn.Identity(), scale=S, halo=3), None) == 3  # bound below the default
    assert tile_halo(BicubicMethod(S), None) == 2 and tile_halo(net, 5) == 5 and tile_halo(net, 0) == 0
    for bad in (-1, "wide", 2.5, True):
        with pytest.raises(InputError, match="halo"):
            FuseOptions(halo=bad)


def test_tiles_run_under_a_block_cache_sized_for_a_row_of_tiles(pair, tmp_path, monkeypatch):
    import csakd_qgis.fusion.engine as engine
    from csakd_qgis.fusion.plan import WRITE_CACHE_MB
    from csakd_qgis.io.read import BLOCK_CACHE_MB

    lr_path, msi_path, _lr, _msi = pair
    asked = []
    real = engine.gdal_block_cache

    def recording(megabytes):
        asked.append(megabytes)
        return real(megabytes)

    monkeypatch.setattr(engine, "gdal_block_cache", recording)
    fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", tile=10, overlap=2, block_width=64,
         device="cpu", shift_correction=False)
    # a tile reads 10 + 2 (2 + 2) = 18 LR px; a column block of 64 HR px spans 64 // 3 + 2 x 18 = 57 LR px
    lr_info, msi_info = read_info(lr_path), read_info(msi_path)
    needed = lr_info.block_row_bytes(57, 18) + msi_info.block_row_bytes(171, 54)
    # the sample, the tiles (both inputs' blocks counted: the base serves only the output's writes), then the
    # output guard (small again)
    assert asked == [BLOCK_CACHE_MB, WRITE_CACHE_MB + -(-needed // 2**20), BLOCK_CACHE_MB]


def test_band_interleaved_inputs_add_no_blocks_to_the_cache(pair, tmp_path, monkeypatch):
    import csakd_qgis.fusion.engine as engine
    from csakd_qgis.io.read import BLOCK_CACHE_MB

    copies = []
    for path in pair[:2]:
        copy = tmp_path / f"band_{os.path.basename(path)}"
        with rasterio.open(path) as src:
            with rasterio.open(copy, "w", **{**src.profile, "interleave": "band"}) as dst:
                dst.write(src.read())
        assert read_info(path).shared_blocks and not read_info(str(copy)).shared_blocks
        copies.append(str(copy))
    asked = []
    real = engine.gdal_block_cache
    monkeypatch.setattr(engine, "gdal_block_cache", lambda megabytes: asked.append(megabytes) or real(megabytes))
    fuse(*copies, str(tmp_path / "o.tif"), method="bicubic", tile=10, overlap=2, block_width=64, device="cpu",
         shift_correction=False)
    assert asked == [BLOCK_CACHE_MB] * 3


@pytest.mark.parametrize("every, trims", [(1, 14), (4, 10), (1000, 0)])
def test_heap_is_trimmed_once_per_trim_every_tiles(pair, tmp_path, monkeypatch, every, trims):
    from csakd_qgis.fusion import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "_trim_heap", lambda: calls.append(1))
    monkeypatch.setattr(pipeline, "TRIM_EVERY", every)
    lr_path, msi_path, _lr, _msi = pair
    report = fuse(lr_path, msi_path, str(tmp_path / "o.tif"), method="bicubic", tile=10, overlap=2, batch_size=3,
                  device="cpu", block_width=64, output_block=32, shift_correction=False)
    # 25 tiles and 15 carried visits: 40 items in 14 batches of 3; a trim at each batch that reaches a multiple
    assert report.tiles_total + report.tiles_carried == 40 and len(calls) == trims
