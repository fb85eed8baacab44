import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from product_fixtures import (
    EMIT_GEOTRANSFORM,
    ENMAP_FWHM,
    ENMAP_OFFSETS,
    ENMAP_WAVES,
    S2_XML_CENTRAL,
    UTM32_10M,
    UTM33_30M,
    emit_product,
    enmap_product,
    landsat_product,
    prisma_product,
    s2_product,
    tif,
    zip_folder,
)

from csakd_qgis.errors import InputError
from csakd_qgis.io.read import read_info, read_window
from csakd_qgis.products import detect, resolve_input


def _mask(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


# ----------------------------------------------------------------------------- dispatcher


def test_ordinary_raster_passes_through_untouched(tmp_path):
    path = tif(tmp_path / "scene.tif", np.ones((2, 3, 3), np.float32), UTM33_30M)
    cache = tmp_path / "cache"
    resolved = resolve_input(str(path), cache_dir=str(cache))
    assert resolved.path == str(path) and resolved.mask is None and resolved.product == "" and resolved.log == ()
    assert not cache.exists()
    assert resolve_input('NETCDF:"x.nc":reflectance').path == 'NETCDF:"x.nc":reflectance'


# ----------------------------------------------------------------------------- EnMAP


def test_enmap_l2a(tmp_path):
    product = enmap_product(tmp_path)
    folder = product["folder"]
    resolved = resolve_input(str(folder), cache_dir=str(tmp_path / "cache"))
    assert resolved.product == "EnMAP L2A" and resolved.path.endswith(".vrt")
    assert str(tmp_path / "cache") in resolved.path
    info = read_info(resolved.path)
    assert [b.wavelength_nm for b in info.bands] == list(ENMAP_WAVES)
    assert [b.fwhm_nm for b in info.bands] == list(ENMAP_FWHM)
    assert [b.good for b in info.bands] == [True, True, True, False, True]  # band 4 is all nodata
    assert info.scales == (1e-4,) * 5 and info.offsets == ENMAP_OFFSETS
    assert info.nodata == -32768 and info.crs.to_epsg() == 32633 and info.transform == UTM33_30M
    data, valid = read_window(resolved.path)
    cube = product["cube"].astype(np.float64)
    expected = cube * 1e-4 + np.asarray(ENMAP_OFFSETS)[:, None, None]
    good = [0, 1, 2, 4]
    assert not valid[0, 0] and valid.sum() == 6 * 8 - 1
    np.testing.assert_allclose(data[good][:, valid], expected[good][:, valid], rtol=1e-6)
    assert np.isnan(data[3]).all()
    expected_mask = (product["pixel"] | product["cloud"] | product["shadow"]).astype(np.uint8)
    np.testing.assert_array_equal(_mask(resolved.mask), expected_mask)
    with rasterio.open(resolved.mask) as ds:
        assert ds.transform == UTM33_30M
    assert any("QL_QUALITY_CIRRUS" in line for line in resolved.log)
    # the XML or the image give the same product
    for name in ("-METADATA.XML", "-SPECTRAL_IMAGE.TIF"):
        other = resolve_input(str(folder / (folder.name + name)), cache_dir=str(tmp_path / "cache"))
        assert (other.path, other.mask) == (resolved.path, resolved.mask)


def test_enmap_without_metadata_says_what_is_missing(tmp_path):
    folder = enmap_product(tmp_path)["folder"]
    image = folder / (folder.name + "-SPECTRAL_IMAGE.TIF")
    (folder / (folder.name + "-METADATA.XML")).unlink()
    with pytest.raises(InputError, match="METADATA.XML"):
        resolve_input(str(image), cache_dir=str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- Sentinel-2


def _check_s2(resolved, product, wavelengths):
    assert resolved.product == "Sentinel-2 L2A"
    info = read_info(resolved.path)
    assert [b.description.split()[0] for b in info.bands] == ["B2", "B3", "B4", "B8"]
    assert [b.wavelength_nm for b in info.bands] == wavelengths
    assert [b.fwhm_nm for b in info.bands] == [66.0, 36.0, 31.0, 106.0]
    assert info.scales == (1e-4,) * 4 and info.offsets == pytest.approx((-0.1,) * 4)
    assert info.nodata == 0 and info.crs.to_epsg() == 32632 and info.transform == UTM32_10M
    data, valid = read_window(resolved.path)
    dn = np.stack([product["bands"][name] for name in ("B02", "B03", "B04", "B08")]).astype(np.float64)
    assert not valid[7].any() and valid[:7].all()
    np.testing.assert_allclose(data[:, :7], (dn[:, :7] - 1000) / 10000, rtol=1e-6, atol=1e-7)
    scl = product["scl"]
    expected = np.isin(scl, (0, 1, 3, 8, 9, 10, 11)).repeat(2, axis=0).repeat(2, axis=1)
    mask_info = read_info(resolved.mask)
    assert (mask_info.width, mask_info.height, mask_info.transform) == (8, 8, UTM32_10M)
    np.testing.assert_array_equal(_mask(resolved.mask), expected.astype(np.uint8))


def test_sentinel2_safe_folder_xml_and_zip(tmp_path):
    product = s2_product(tmp_path)
    safe = product["safe"]
    cache = str(tmp_path / "cache")
    wavelengths = [S2_XML_CENTRAL[b] for b in ("B2", "B3", "B4", "B8")]
    _check_s2(resolve_input(str(safe), cache_dir=cache), product, wavelengths)
    _check_s2(resolve_input(str(safe / "MTD_MSIL2A.xml"), cache_dir=cache), product, wavelengths)
    archive = zip_folder(safe, tmp_path / "S2B_MSIL2A_20230601T101559_N0509_R065_T32UQD_20230601T120000")
    resolved = resolve_input(str(archive), cache_dir=cache)
    assert "/vsizip/" in open(resolved.path).read()
    _check_s2(resolved, product, wavelengths)


def test_sentinel2_band_table_by_spacecraft_without_xml_wavelengths(tmp_path):
    product = s2_product(tmp_path, spectral_information=False)
    resolved = resolve_input(str(product["safe"]), cache_dir=str(tmp_path / "cache"))
    _check_s2(resolved, product, [492.1, 559.0, 665.0, 833.0])  # Sentinel-2B
    assert any("S2B table" in line for line in resolved.log)


def test_sentinel2_before_baseline_04_has_no_add_offset(tmp_path):
    product = s2_product(tmp_path, add_offset=False)
    resolved = resolve_input(str(product["safe"]), cache_dir=str(tmp_path / "cache"))
    info = read_info(resolved.path)
    assert info.scales == (1e-4,) * 4 and info.offsets == (0.0,) * 4
    data, valid = read_window(resolved.path)
    np.testing.assert_allclose(data[0][valid], product["bands"]["B02"][valid] / 10000, rtol=1e-6)


def test_sentinel2_missing_scl(tmp_path):
    safe = s2_product(tmp_path)["safe"]
    for scl in safe.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2"):
        scl.unlink()
    with pytest.raises(InputError, match="SCL"):
        resolve_input(str(safe), cache_dir=str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- Landsat


def test_landsat_c2_l2(tmp_path):
    product = landsat_product(tmp_path)
    cache = str(tmp_path / "cache")
    resolved = resolve_input(str(product["mtl"]), cache_dir=cache)
    assert resolved.product == "Landsat C2 L2"
    info = read_info(resolved.path)
    assert [b.wavelength_nm for b in info.bands] == [482.0, 561.4, 654.6, 864.7, 1608.9, 2200.7]
    assert info.scales == (2.75e-5,) * 6 and info.offsets == (-0.2,) * 6  # not the Level-1 TOA factors
    assert info.nodata == 0 and info.crs.to_epsg() == 32633 and info.transform == UTM33_30M
    data, valid = read_window(resolved.path)
    dn = np.stack([product["bands"][n] for n in range(2, 8)]).astype(np.float64)
    assert not valid[0, :2].any() and valid.sum() == 30 - 2
    np.testing.assert_allclose(data[:, valid], dn[:, valid] * 2.75e-5 - 0.2, rtol=1e-6)
    expected = np.zeros((5, 6), np.uint8)
    expected[0, :2] = expected[1, 1] = expected[2, 2] = expected[3, 3] = expected[4, 4] = 1
    np.testing.assert_array_equal(_mask(resolved.mask), expected)
    assert resolve_input(str(product["folder"]), cache_dir=cache).path == resolved.path


def test_landsat_level1_and_missing_band_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    product = landsat_product(tmp_path / "a", level2=False)
    with pytest.raises(InputError, match="Level-2"):
        resolve_input(str(product["mtl"]), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "b").mkdir()
    product = landsat_product(tmp_path / "b")
    os.remove(product["folder"] / (product["folder"].name + "_SR_B5.TIF"))
    with pytest.raises(InputError, match="_SR_B5.TIF"):
        resolve_input(str(product["mtl"]), cache_dir=str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- PRISMA


def test_prisma_l2d(tmp_path):
    product = prisma_product(tmp_path)
    resolved = resolve_input(str(product["path"]), cache_dir=str(tmp_path / "cache"))
    assert resolved.product == "PRISMA L2D" and resolved.path.endswith(".tif") and resolved.mask is None
    info = read_info(resolved.path)
    assert [b.wavelength_nm for b in info.bands] == [410.0, 950.0, 980.0, 1200.0, 2400.0]
    assert [b.fwhm_nm for b in info.bands] == [11.0, 13.0, 12.0, 10.0, 9.0]
    assert info.offsets == (0.0, -0.1, 0.0, -0.1, -0.1)
    assert info.scales == pytest.approx((1 / 65535,) * 5)
    # the UL corner is the centre of the upper-left 30 m pixel
    assert info.crs.to_epsg() == 32633 and info.transform == Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)
    vnir, swir = product["vnir"].astype(np.float64), product["swir"].astype(np.float64)
    dn = np.stack([vnir[:, 2], swir[:, 1], vnir[:, 0], swir[:, 2], swir[:, 0]])
    low = np.array([0.0, -0.1, 0.0, -0.1, -0.1])[:, None, None]
    high = np.array([1.0, 0.9, 1.0, 0.9, 0.9])[:, None, None]
    data, valid = read_window(resolved.path)
    assert not valid[0, 0] and valid.sum() == 4 * 5 - 1
    dn[2, 1, 1] = 1  # a zero inside the scene is stored as 1, not taken for fill
    np.testing.assert_allclose(data[:, valid], (low + dn * (high - low) / 65535)[:, valid], rtol=1e-6, atol=1e-9)
    again = resolve_input(str(product["path"]), cache_dir=str(tmp_path / "cache"))
    assert again.path == resolved.path and "reused" in again.log[-1]


def test_prisma_band_without_data_is_flagged_bad(tmp_path):
    product = prisma_product(tmp_path, dead_band=True)
    resolved = resolve_input(str(product["path"]), cache_dir=str(tmp_path / "cache"))
    assert [b.good for b in read_info(resolved.path).bands] == [True, False, True, True, True]
    assert "bands [2]" in resolved.log[-1]


# ----------------------------------------------------------------------------- EMIT


def test_emit_l2a_orthorectified_with_mask(tmp_path):
    product = emit_product(tmp_path)
    resolved = resolve_input(str(product["path"]), cache_dir=str(tmp_path / "cache"))
    assert resolved.product == "EMIT L2A"
    info = read_info(resolved.path)
    assert [b.wavelength_nm for b in info.bands] == [381.0, 1400.0, 2493.0]
    assert [b.fwhm_nm for b in info.bands] == [8.5, 8.6, 8.7]
    assert [b.good for b in info.bands] == [True, False, True]
    assert info.nodata == -9999 and info.crs.to_epsg() == 4326
    assert info.transform == Affine.from_gdal(*EMIT_GEOTRANSFORM) and (info.width, info.height) == (6, 5)
    glt_x, glt_y, swath = product["glt_x"], product["glt_y"], product["swath"]
    inside = glt_x > 0
    data, valid = read_window(resolved.path)
    np.testing.assert_array_equal(valid, inside)
    expected = swath[glt_y[inside] - 1, glt_x[inside] - 1, :].T
    np.testing.assert_array_equal(data[:, inside], expected)
    assert data[0, 0, 4] == swath[0, 0, 0]  # crosstrack 1 lands in map column 4 of row 0 (mirrored)
    flags = product["mask"][..., 7]
    expected_mask = np.ones((5, 6), np.uint8)
    expected_mask[inside] = flags[glt_y[inside] - 1, glt_x[inside] - 1] != 0
    np.testing.assert_array_equal(_mask(resolved.mask), expected_mask)
    assert expected_mask[inside].sum() == 1


def test_emit_without_mask_file(tmp_path):
    product = emit_product(tmp_path, with_mask=False)
    resolved = resolve_input(str(product["path"]), cache_dir=str(tmp_path / "cache"))
    assert resolved.mask is None and any("clouds not masked" in line for line in resolved.log)


def test_detect_reads_an_unnamed_metadata_xml(tmp_path):
    product = landsat_product(tmp_path)
    xml = tmp_path / "metadata.xml"
    xml.write_text("<?xml version='1.0'?>\n<LANDSAT_METADATA_FILE><PRODUCT_CONTENTS/></LANDSAT_METADATA_FILE>\n")
    assert detect(str(xml)) == "Landsat C2 L2"
    assert detect(str(product["folder"])) == "Landsat C2 L2"
    assert detect(str(tmp_path / "plain.tif")) == ""
