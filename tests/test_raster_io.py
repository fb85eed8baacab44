import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from csakd_qgis.errors import Cancelled, RasterReadError, RasterWriteError
from csakd_qgis.io import read as read_io
from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import _nodata_is_the_mask, read_info, read_window
from csakd_qgis.io.write import RasterWriter, write_raster

TRANSFORM = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)


def test_band_metadata_round_trip(tmp_path):
    bands = (BandInfo(450.5, 10.25, True, "blue"), BandInfo(1400.0, 12.0, False, ""),
             BandInfo(2200.125, 9.5, True, "swir"))
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    out = tmp_path / "meta.tif"
    write_raster(str(out), data, crs="EPSG:32633", transform=TRANSFORM, bands=bands)
    info = read_info(str(out))
    assert [b.wavelength_nm for b in info.bands] == [450.5, 1400.0, 2200.125]
    assert [b.fwhm_nm for b in info.bands] == [10.25, 12.0, 9.5]
    assert [b.good for b in info.bands] == [True, False, True]
    assert info.bands[0].description == "blue"
    assert info.bands[1].description == "band 2 (1400 Nanometers)"
    assert info.crs.to_epsg() == 32633 and info.transform == TRANSFORM
    assert info.res == (30.0, 30.0)
    assert info.bounds == (366000.0, 5810000.0 - 120.0, 366150.0, 5810000.0)
    with rasterio.open(out) as ds:
        envi = ds.tags(ns="ENVI")
    assert envi["wavelength"] == "{450.5, 1400.0, 2200.125}"
    assert envi["bbl"] == "{1, 0, 1}"
    read, valid = read_window(str(out))
    np.testing.assert_array_equal(read, data)
    assert valid.all()


def test_micrometre_items_and_descriptions_are_converted(geotiff):
    data = np.ones((2, 3, 3), np.float32)
    tags = [{"wavelength": "0.45", "fwhm": "0.01", "wavelength_units": "µm"},
            {"wavelength": "2.2", "fwhm": "0.02", "wavelength_units": "µm"}]
    path = geotiff("um.tif", data, band_tags=tags)
    info = read_info(str(path))
    assert [b.wavelength_nm for b in info.bands] == pytest.approx([450.0, 2200.0])
    assert [b.fwhm_nm for b in info.bands] == pytest.approx([10.0, 20.0])
    # band descriptions only, one in micrometers
    path = geotiff("desc.tif", data, descriptions=["band 1 (376.44 Nanometers)", "1.5 Micrometers"])
    assert [b.wavelength_nm for b in read_info(str(path)).bands] == pytest.approx([376.44, 1500.0])
    # dataset-level unit, no unit on the bands
    path = geotiff("ds.tif", data, band_tags=[{"wavelength": "0.5"}, {"wavelength": "0.6"}],
                   dataset_tags={"wavelength_units": "micrometers"})
    assert [b.wavelength_nm for b in read_info(str(path)).bands] == pytest.approx([500.0, 600.0])


def test_envi_domain_wavelengths_with_unit(tmp_path):
    path = tmp_path / "cube.img"
    with rasterio.open(path, "w", driver="ENVI", width=2, height=2, count=3, dtype="float32") as ds:
        ds.write(np.ones((3, 2, 2), np.float32))
        ds.update_tags(ns="ENVI", wavelength="{0.4, 0.5, 0.6}", fwhm="{0.01, 0.01, 0.02}",
                       bbl="{1, 0, 1}", wavelength_units="Micrometers")
    info = read_info(str(path))
    assert [b.wavelength_nm for b in info.bands] == pytest.approx([400.0, 500.0, 600.0])
    assert [b.fwhm_nm for b in info.bands] == pytest.approx([10.0, 10.0, 20.0])
    assert [b.good for b in info.bands] == [True, False, True]


def test_enmap_tile(shared_data):
    path = shared_data / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif"
    info = read_info(str(path))
    assert info.count == 224 and (info.width, info.height) == (32, 32)
    assert info.crs.to_epsg() == 32633 and info.res == (30.0, 30.0)
    assert info.bands[0].wavelength_nm == pytest.approx(418.24)
    assert info.bands[0].fwhm_nm == pytest.approx(6.99561)
    assert all(400 < b.wavelength_nm < 2500 for b in info.bands)
    assert sum(not b.good for b in info.bands) == 6
    data, valid = read_window(str(path), Window(4, 8, 6, 5))
    with rasterio.open(path) as ds:
        raw = ds.read(1, window=Window(4, 8, 6, 5))
    # stored reflectance x 10000 with GDAL scale 1e-4 -> reflectance
    np.testing.assert_allclose(data[0], raw * 1e-4, rtol=1e-6)
    # the bad bands hold only nodata: NaN, but they do not make the pixels invalid
    assert valid.all()
    assert np.isnan(data[[not b.good for b in info.bands]]).all()


def test_aviris_ng_envi_chips(shared_data):
    folder = shared_data / "aviris_ng"
    info = read_info(str(folder / "ang20160910t185702_2rdn_img"))
    assert info.count == 425 and info.crs.to_epsg() == 32611 and info.res == (15.0, 15.0)
    assert info.bands[0].wavelength_nm == pytest.approx(376.44)
    assert info.bands[-1].wavelength_nm == pytest.approx(2500.12)
    waves = np.array([b.wavelength_nm for b in info.bands])
    assert (np.diff(waves) > 0).all()
    # second chip: ENVI 'wavelength' / 'fwhm' lists without unit, nanometre values
    info = read_info(str(folder / "ang20170323t202244_rdn_7000-7010"))
    assert info.crs is None
    assert info.bands[0].wavelength_nm == pytest.approx(376.86)
    assert info.bands[0].fwhm_nm == pytest.approx(5.57)


def test_nodata_mask_and_nonfinite_are_invalid(geotiff):
    data = np.full((2, 4, 4), 5.0, np.float32)
    data[0, 0, 0] = -9999.0          # nodata in one band
    data[1, 1, 1] = np.inf           # non-finite
    data[1, 2, 2] = np.nan
    path = geotiff("nd.tif", data, nodata=-9999.0)
    read, valid = read_window(str(path))
    expected = np.ones((4, 4), bool)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = False
    np.testing.assert_array_equal(valid, expected)
    assert np.isnan(read[:, ~expected]).all()
    assert (read[:, expected] == 5.0).all()


def test_dataset_mask_and_alpha_band(tmp_path):
    path = tmp_path / "rgba.tif"
    with rasterio.open(path, "w", driver="GTiff", width=3, height=2, count=4, dtype="uint8",
                       photometric="RGB", alpha="YES") as ds:
        ds.write(np.full((3, 2, 3), 7, np.uint8), [1, 2, 3])
        ds.write(np.array([[255, 0, 255], [255, 255, 0]], np.uint8), 4)
    info = read_info(str(path))
    assert info.count == 3
    read, valid = read_window(str(path))
    assert read.shape == (3, 2, 3)
    np.testing.assert_array_equal(valid, [[True, False, True], [True, True, False]])
    # a per-dataset mask (.msk) without nodata or alpha
    path = tmp_path / "msk.tif"
    with rasterio.open(path, "w", driver="GTiff", width=3, height=1, count=1, dtype="float32") as ds:
        ds.write(np.ones((1, 1, 3), np.float32))
        ds.write_mask(np.array([[255, 255, 0]], np.uint8))
    _, valid = read_window(str(path))
    np.testing.assert_array_equal(valid, [[True, True, False]])


def test_nodata_masks_are_compared_instead_of_read(geotiff):
    data = np.full((2, 3, 3), 5.0, np.float32)
    data[0, 0, 0] = -9999.0

    def skips(path, bands=(1, 2)):
        with rasterio.open(path) as ds:
            return _nodata_is_the_mask(ds, bands, np.dtype(ds.dtypes[0]))

    assert skips(geotiff("nd.tif", data, nodata=-9999.0))
    assert skips(geotiff("plain.tif", data))
    data[1, 2, 2] = np.nan
    path = geotiff("nan.tif", data, nodata=np.nan)
    assert skips(path)
    _, valid = read_window(str(path))
    assert valid.sum() == 8 and not valid[2, 2]  # -9999 is a value when NaN is the nodata value
    # a nodata value the stored type cannot hold exactly: GDAL's own mask decides (it rounds 0.5 to 0 for int16)
    path = geotiff("inexact.tif", np.array([[[0, 1, 2]]], np.int16), nodata=0.5)
    assert not skips(path, (1,))
    _, valid = read_window(str(path))
    np.testing.assert_array_equal(valid, [[False, True, True]])


def test_scale_offset_boundless_and_band_selection(geotiff):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    path = geotiff("so.tif", data, scales=[0.5, 2.0], offsets=[1.0, -3.0])
    read, valid = read_window(str(path), Window(-1, 1, 3, 3), bands=[2], boundless=True)
    assert read.shape == (1, 3, 3)
    expected_valid = np.array([[False, True, True], [False, True, True], [False, False, False]])
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_allclose(read[0, :2, 1:], data[1, 1:3, 0:2] * 2.0 - 3.0)
    with pytest.raises(RasterReadError, match="outside"):
        read_window(str(path), Window(-1, 1, 3, 3))
    with pytest.raises(RasterReadError, match="band number"):
        read_window(str(path), bands=[3])


def test_uint16_scale_offset_in_float32_matches_float64(geotiff):
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 65536, size=(3, 40, 50), dtype=np.uint16)
    stored[1, 5, 7] = 65535                      # nodata in one band
    scales, offsets = [1e-4, 2.5e-5, 0.1], [-0.1, 0.0, 273.15]
    path = geotiff("u16.tif", stored, nodata=65535, scales=scales, offsets=offsets)
    read, valid = read_window(str(path))
    raw = stored.astype(np.float64)
    exact = raw * np.array(scales)[:, None, None] + np.array(offsets)[:, None, None]
    ok = (stored != 65535).all(axis=0)
    np.testing.assert_array_equal(valid, ok)
    assert np.isnan(read[:, ~ok]).all()
    # a few float32 roundings of |raw * scale| + |offset|: float32(scale), the product, the sum
    bound = 4 * 2.0 ** -24 * (np.abs(raw * np.array(scales)[:, None, None]) + np.abs(offsets)[:, None, None])
    error = np.abs(read.astype(np.float64) - exact)
    assert (error[:, ok] <= bound[:, ok]).all()
    assert error[0, ok].max() < 1e-6                 # reflectance 0..6.45 at 1e-4: float32 ulp 4.8e-7 at 4..8


def test_nodata_is_compared_on_the_stored_values(geotiff):
    # raw -1 is nodata; raw -3 is valid although its physical value, -1.0, equals the nodata value
    ints = np.array([[[-1, -3, 7]]], np.int16)
    read, valid = read_window(str(geotiff("i16.tif", ints, nodata=-1, scales=[0.5], offsets=[0.5])))
    np.testing.assert_array_equal(valid, [[False, True, True]])
    assert read.dtype == np.float32 and read[0, 0, 1] == -1.0 and read[0, 0, 2] == 4.0
    # a nodata value the stored type cannot hold marks nothing
    _, valid = read_window(str(geotiff("i16b.tif", ints, nodata=0.5)))
    np.testing.assert_array_equal(valid, [[True, True, True]])


@pytest.mark.parametrize("dtype, nodata, mask", [("int16", -5, False), ("float64", None, True),
                                                  ("float32", np.nan, False), ("uint16", None, False)])
def test_band_groups_read_as_one_read_does(tmp_path, monkeypatch, dtype, nodata, mask):
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 900, size=(7, 9, 11)).astype(dtype)
    stored[2, 3, 4] = -5 if nodata == -5 else stored[2, 3, 4]
    if dtype == "float32":
        stored[4, 1, 1], stored[5, 0, 2] = np.nan, np.inf
    scales, offsets = [0.5, 1e-4, 2.0, 1.0, 0.25, 3.0, 1.0], [0.0, 1.0, -2.0, 0.0, 0.5, 0.0, 7.0]
    monkeypatch.setattr(read_io, "READ_CHUNK", 3 * 4 * 2 + 1)  # two bands of a 3 x 4 window per read
    reads = {}
    for interleave in ("band", "pixel"):
        path = tmp_path / f"{interleave}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=11, height=9, count=7, dtype=dtype, nodata=nodata,
                           interleave=interleave, tiled=True, blockxsize=16, blockysize=16) as ds:
            ds.write(stored)
            ds.scales, ds.offsets = scales, offsets
            if mask:
                ds.write_mask(np.where(np.arange(11) % 3 == 0, 0, 255).astype(np.uint8)[None].repeat(9, 0))
        with rasterio.open(path) as ds:
            groups = list(read_io._band_groups(ds, 7, 3 * 4))
            assert groups == ([slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 7)] if interleave == "band"
                              else [slice(0, 7)])
            reads[interleave] = [read_io.read_band_window(ds, window, [7, 2, 5, 1, 3], scales=scales[:5],
                                                          offsets=offsets[:5], boundless=True)
                                 for window in (Window(1, 2, 4, 3), Window(-2, 7, 5, 4), Window(0, 0, 11, 9))]
    for (data, valid), (expected, expected_valid) in zip(reads["band"], reads["pixel"]):
        np.testing.assert_array_equal(valid, expected_valid)
        np.testing.assert_array_equal(data, expected)  # NaN where invalid in both
    data, valid = reads["band"][2]
    # the scales and offsets belong to the requested bands, in their order
    physical = stored[[6, 1, 4, 0, 2]].astype(np.float64) * np.array(scales[:5])[:, None, None]
    physical += np.array(offsets[:5])[:, None, None]
    ok = np.isfinite(physical)
    if nodata is not None and not np.isnan(nodata):
        ok &= stored[[6, 1, 4, 0, 2]] != nodata
    if mask:
        ok &= (np.arange(11) % 3 != 0)[None, None, :]
    np.testing.assert_array_equal(valid, ok)
    np.testing.assert_allclose(data[ok], physical[ok], rtol=1e-6)
    assert np.isnan(data[~ok]).all()


def test_unreadable_path_is_a_read_error(tmp_path):
    with pytest.raises(RasterReadError, match="gdalinfo"):
        read_info(str(tmp_path / "missing.tif"))


def test_int16_output_with_scale_and_nodata(tmp_path):
    data = np.array([[[0.12344, np.nan, -3.3], [3.2768, 0.00004, 1.0]]], np.float32)
    out = tmp_path / "int.tif"
    write_raster(str(out), data, crs="EPSG:32633", transform=TRANSFORM, dtype="int16", scale=1e-4,
                 nodata=-32768)
    with rasterio.open(out) as ds:
        stored = ds.read(1)
        assert ds.scales == (1e-4,) and ds.nodata == -32768
    # 0.12344 / 1e-4 -> 1234; -3.3 clips to -32767 (nodata reserved); 3.2768 clips to 32767
    np.testing.assert_array_equal(stored, [[1234, -32768, -32767], [32767, 0, 10000]])
    read, valid = read_window(str(out))
    np.testing.assert_array_equal(valid, [[True, False, True], [True, True, True]])
    np.testing.assert_allclose(read[0, 1], [3.2767, 0.0, 1.0], rtol=1e-6)


def test_integer_value_equal_to_nodata_is_moved(tmp_path):
    out = tmp_path / "u8.tif"
    write_raster(str(out), np.array([[[0.0, 1.0, np.nan]]]), crs="EPSG:32633", transform=TRANSFORM,
                 dtype="uint8", nodata=0)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), [[1, 1, 0]])
    # a nodata value inside the range: values equal to it move up (down at the top), NaN and inf store it
    for nodata, values, stored in ((7, [7.0, 6.6, np.inf, -40000.0], [8, 8, 7, -32768]),
                                   (32767, [32767.0, np.nan, 40000.0, 1.0], [32766, 32767, 32766, 1])):
        write_raster(str(out), np.array([[values]]), crs="EPSG:32633", transform=TRANSFORM, dtype="int16",
                     nodata=nodata, overwrite=True)
        with rasterio.open(out) as ds:
            np.testing.assert_array_equal(ds.read(1), [stored])


def test_float_nodata_defaults_to_nan(tmp_path):
    out = tmp_path / "f.tif"
    write_raster(str(out), np.array([[[1.0, np.nan]]], np.float32), crs="EPSG:32633", transform=TRANSFORM)
    with rasterio.open(out) as ds:
        assert np.isnan(ds.nodata)
    _, valid = read_window(str(out))
    np.testing.assert_array_equal(valid, [[True, False]])


def test_writer_is_atomic(tmp_path):
    out = tmp_path / "atomic.tif"
    write_raster(str(out), np.ones((1, 4, 4), np.float32), crs="EPSG:32633", transform=TRANSFORM)
    before = out.read_bytes()
    with pytest.raises(RasterWriteError, match="--overwrite"):
        write_raster(str(out), np.zeros((1, 4, 4), np.float32), crs="EPSG:32633", transform=TRANSFORM)
    for error in (Cancelled("stop"), RuntimeError("boom")):
        with pytest.raises(type(error)):
            with RasterWriter(str(out), width=4, height=4, count=1, crs="EPSG:32633", transform=TRANSFORM,
                              overwrite=True) as writer:
                writer.write(np.zeros((1, 2, 4), np.float32), Window(0, 0, 4, 2))
                partial = [name for name in os.listdir(tmp_path) if "csakd-partial" in name]
                assert partial == [f".atomic.tif.csakd-partial-{os.getpid()}.tif"]
                raise error
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["atomic.tif"]
    with pytest.raises(RasterWriteError, match="does not fit"):
        with RasterWriter(str(out), width=4, height=4, count=1, crs="EPSG:32633", transform=TRANSFORM,
                          overwrite=True) as writer:
            writer.write(np.zeros((1, 3, 4), np.float32), Window(0, 0, 4, 2))
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["atomic.tif"]


def test_windowed_writes_and_cog(tmp_path):
    out = tmp_path / "cog.tif"
    full = np.random.default_rng(1).random((2, 40, 50)).astype(np.float32)
    bands = (BandInfo(500.0, 5.0), BandInfo(600.0, 6.0))
    with RasterWriter(str(out), width=50, height=40, count=2, crs="EPSG:32633", transform=TRANSFORM,
                      bands=bands, blocksize=16, cog=True) as writer:
        for row in range(0, 40, 16):
            for col in range(0, 50, 16):
                win = Window(col, row, min(16, 50 - col), min(16, 40 - row))
                writer.write(full[:, row:row + win.height, col:col + win.width], win)
    read, valid = read_window(str(out))
    np.testing.assert_array_equal(read, full)
    with rasterio.open(out) as ds:
        assert ds.profile["compress"].lower() == "zstd"
    assert [b.wavelength_nm for b in read_info(str(out)).bands] == [500.0, 600.0]


def test_encode_in_band_chunks_matches_float64_reference(tmp_path, monkeypatch):
    import csakd_qgis.io.write as rio
    rng = np.random.default_rng(2)
    data = rng.uniform(-4.0, 4.0, (7, 3, 5)).astype(np.float32)
    data[2, 1, 1], data[5, 0, 4], data[0, 2, 2] = np.nan, np.inf, -3.2768  # -32768 stored -> moved to -32767
    monkeypatch.setattr(rio, "ENCODE_CHUNK", 2 * 15)  # two bands per chunk: the 7 bands take 4 chunks
    with RasterWriter(str(tmp_path / "e.tif"), width=5, height=3, count=7, crs="EPSG:32633", transform=TRANSFORM,
                      dtype="int16", scale=1e-4, nodata=-32768) as writer:
        stored = writer.encode(data)
        writer.write_stored(stored, Window(0, 0, 5, 3))
        with pytest.raises(RasterWriteError, match="encode them first"):
            writer.write_stored(stored.astype(np.int32), Window(0, 0, 5, 3))
    expected = np.clip(np.rint(data.astype(np.float64) / 1e-4), -32767, 32767)
    expected[~np.isfinite(data)] = -32768
    assert stored.dtype == np.int16 and stored[0, 2, 2] == -32767
    np.testing.assert_array_equal(stored, expected.astype(np.int16))
    with rasterio.open(tmp_path / "e.tif") as ds:
        np.testing.assert_array_equal(ds.read(), stored)


@pytest.mark.parametrize("dtype, chunk", [("int16", 4), ("uint16", 7), ("float32", 4), ("float32", 2 * 15)])
def test_encode_into_a_strip_view_in_row_pieces(tmp_path, monkeypatch, dtype, chunk):
    """Pieces smaller than one band (rows of it) and an ``out`` inside a larger buffer give the same values."""
    import csakd_qgis.io.write as rio
    rng = np.random.default_rng(3)
    data = rng.uniform(-1.0, 8.0, (3, 3, 5)).astype(np.float32)
    data[1, 2, 3], data[2, 0, 0] = np.nan, -np.inf
    with RasterWriter(str(tmp_path / "e.tif"), width=5, height=3, count=3, crs="EPSG:32633", transform=TRANSFORM,
                      dtype=dtype, scale=1e-3) as writer:
        whole = writer.encode(data)
        monkeypatch.setattr(rio, "ENCODE_CHUNK", chunk)
        strip = np.zeros((3, 6, 9), dtype=dtype)
        returned = writer.encode(data, out=strip[:, 2:5, 1:6])
        with pytest.raises(RasterWriteError, match="buffer"):
            writer.encode(data, out=np.zeros((3, 3, 5), np.float64))
    assert returned.base is strip
    np.testing.assert_array_equal(strip[:, 2:5, 1:6], whole)
    assert not strip[:, :2].any() and not strip[:, 5:].any() and not strip[:, :, 0].any() and not strip[:, :, 6:].any()
    expected = np.float64(data) / 1e-3
    if dtype != "float32":
        info = np.iinfo(dtype)
        expected = np.clip(np.rint(expected), info.min, info.max)
        expected[expected == writer.nodata] = writer.nodata + 1 if writer.nodata < info.max else writer.nodata - 1
    expected[~np.isfinite(data)] = writer.nodata
    np.testing.assert_array_equal(whole, expected.astype(dtype))


def test_float_encode_with_scale_and_nodata(tmp_path):
    data = np.array([[[0.5, np.nan], [1.25, -2.0]]], np.float32)
    path = tmp_path / "f.tif"
    with RasterWriter(str(path), width=2, height=2, count=1, crs="EPSG:32633", transform=TRANSFORM, scale=0.5,
                      nodata=-9999.0, blocksize=16) as writer:
        assert writer.blocksize == 16
        np.testing.assert_array_equal(writer.encode(data), [[[1.0, -9999.0], [2.5, -4.0]]])
        writer.write(data, Window(0, 0, 2, 2))
    read, valid = read_window(str(path))
    np.testing.assert_array_equal(valid, [[True, False], [True, True]])
    np.testing.assert_allclose(read[0][valid], [0.5, 1.25, -2.0])


def test_block_shape_and_the_blocks_a_window_can_touch(tmp_path):
    path = tmp_path / "b.tif"
    with rasterio.open(path, "w", driver="GTiff", width=600, height=300, count=3, dtype="int16", tiled=True,
                       blockxsize=128, blockysize=64) as ds:
        ds.write(np.zeros((3, 300, 600), np.int16))
    info = read_info(str(path))
    assert info.block == (64, 128)
    # 200 px across: ceil(200 / 128) + 1 = 3 blocks; 70 px down: ceil(70 / 64) + 1 = 3; 3 bands of int16
    assert info.block_row_bytes(200, 70) == 3 * 3 * 64 * 128 * 3 * 2
    # a window wider than the raster touches no more than the raster: 600 px -> 5 + 1 blocks
    assert info.block_row_bytes(10_000, 1) == 6 * 2 * 64 * 128 * 3 * 2
