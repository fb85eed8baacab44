"""Products, masks and MSI band identity at the engine's boundary (csakd_qgis/fusion/inputs.py)."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from csakd_qgis.cli import main
from csakd_qgis.errors import InputError
from csakd_qgis.fusion.engine import fuse
from csakd_qgis.fusion.plan import prepare
from csakd_qgis.options import FuseOptions, MsiBands

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample"
LR, MSI = str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif")
ENMAP = "ENMAP01-____L2A-DT0000012345_20230601T101010Z_001_V010303_20230602T000000Z"
OPTIONS = dict(device="cpu", shift_correction=False)


def _like(source, path, data=None, tags=True):
    """A copy of raster ``source`` at ``path``, with other pixels ``data`` and without band tags unless ``tags``."""
    with rasterio.open(source) as src:
        profile, values, scales = src.profile, src.read(), src.scales
        band_tags = [src.tags(i) for i in src.indexes]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values if data is None else data)
        dst.scales = scales
        for i, item in enumerate(band_tags, start=1):
            if tags:
                dst.update_tags(i, **{k: v for k, v in item.items() if not k.startswith("STATISTICS")})
    return str(path)


def _mask(source, path, rows, cols):
    """A uint8 mask on ``source``'s grid, 1 in ``[rows, cols]``."""
    with rasterio.open(source) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform)
    mask = np.zeros((profile["height"], profile["width"]), np.uint8)
    mask[rows, cols] = 1
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
    return str(path), mask.astype(bool)


def _enmap_product(root):
    """The sample LR-HSI as an EnMAP L2A folder, with a cloud layer over LR rows 5-7, columns 8-10."""
    folder = root / ENMAP
    folder.mkdir()
    _like(LR, folder / f"{ENMAP}-SPECTRAL_IMAGE.TIF")
    _, cloud = _mask(LR, folder / f"{ENMAP}-QL_QUALITY_CLOUD.TIF", slice(5, 8), slice(8, 11))
    with rasterio.open(LR) as src:
        waves = [(float(src.tags(i)["wavelength"]), float(src.tags(i)["fwhm"])) for i in src.indexes]
    entries = "".join(f'<bandID number="{n}"><wavelengthCenterOfBand>{w}</wavelengthCenterOfBand>'
                      f"<FWHMOfBand>{f}</FWHMOfBand><GainOfBand>0.0001</GainOfBand>"
                      "<OffsetOfBand>0</OffsetOfBand></bandID>" for n, (w, f) in enumerate(waves, start=1))
    (folder / f"{ENMAP}-METADATA.XML").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<level_X><metadata><name>EnMAP</name></metadata><specific>'
        f"<bandCharacterisation>{entries}</bandCharacterisation></specific></level_X>\n")
    return folder, cloud


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(masked=True).filled(np.nan).astype(np.float64)


def test_an_enmap_product_is_read_with_its_mask_like_the_raster_and_mask(tmp_path):
    folder, cloud = _enmap_product(tmp_path)
    report = fuse(str(folder), MSI, str(tmp_path / "product.tif"), method="gsa", cache_dir=str(tmp_path / "cache"),
                  **OPTIONS)
    assert any(n.startswith("LR-HSI: ") and "EnMAP" in n for n in report.notes)
    mask, _ = _mask(LR, tmp_path / "cloud.tif", slice(5, 8), slice(8, 11))
    fuse(LR, MSI, str(tmp_path / "raster.tif"), method="gsa", lr_mask=mask, **OPTIONS)
    product, raster = _read(tmp_path / "product.tif"), _read(tmp_path / "raster.tif")
    np.testing.assert_allclose(product, raster, rtol=1e-5, atol=1e-6, equal_nan=True)
    hr_cloud = np.kron(cloud, np.ones((3, 3), bool))
    assert np.isnan(raster[:, hr_cloud]).all()
    unmasked = fuse(LR, MSI, str(tmp_path / "plain.tif"), method="gsa", **OPTIONS)
    plain = _read(unmasked.output)
    # exactly the masked pixels are excluded: nodata there, data wherever the unmasked run has data
    assert np.array_equal(np.isnan(raster).all(axis=0), np.isnan(plain).all(axis=0) | hr_cloud)


def test_a_cloud_under_the_mask_changes_neither_radiometry_nor_fit(tmp_path):
    with rasterio.open(MSI) as src:
        clear = src.read()
    cloudy = clear.copy()
    cloudy[:, 20:38, 25:43] = 10000  # reflectance 1.0 in every band
    cloudy_msi = _like(MSI, tmp_path / "cloudy.tif", cloudy)
    mask, hr = _mask(MSI, tmp_path / "cloud.tif", slice(20, 38), slice(25, 43))
    options = FuseOptions(**OPTIONS)
    masked, _ = prepare(LR, cloudy_msi, method="gsa", options=options, msi_mask=mask)
    clean_masked, _ = prepare(LR, MSI, method="gsa", options=options, msi_mask=mask)
    clean, _ = prepare(LR, MSI, method="gsa", options=options)
    unmasked, _ = prepare(LR, cloudy_msi, method="gsa", options=options)
    for name in ("lr_level", "msi_level", "lr_fill", "msi_fill"):
        np.testing.assert_array_equal(getattr(masked.radiometry, name), getattr(clean_masked.radiometry, name))
    assert masked.degradation == clean_masked.degradation
    np.testing.assert_allclose(masked.radiometry.msi_level, clean.radiometry.msi_level, rtol=0.1)
    assert not np.allclose(unmasked.radiometry.msi_level, clean.radiometry.msi_level, rtol=0.1)
    out_cloudy = fuse(LR, cloudy_msi, str(tmp_path / "a.tif"), method="gsa", msi_mask=mask, **OPTIONS).output
    out_clean = fuse(LR, MSI, str(tmp_path / "b.tif"), method="gsa", msi_mask=mask, **OPTIONS).output
    a, b = _read(out_cloudy), _read(out_clean)
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[:, hr]).all()




def test_msi_bands_in_another_order_are_read_in_the_models_order(tmp_path):
    with rasterio.open(MSI) as src:
        data = src.read()
    msi = tmp_path / "b4_b3_b2_b8.tif"
    _like(MSI, msi, data[[2, 1, 0, 3]], tags=False)
    with rasterio.open(msi, "r+") as dst:
        dst.scales = (1e-4,) * 4
    identity = MsiBands.parse("sentinel2", "B4,B3,B2,B8")
    report = fuse(LR, str(msi), str(tmp_path / "reordered.tif"), method="csakd", msi_bands=identity, **OPTIONS)
    assert any("read in the order 3, 2, 1, 4" in n for n in report.notes)
    assert any("--msi-sensor sentinel2" in n for n in report.notes)
    fuse(LR, MSI, str(tmp_path / "original.tif"), method="csakd", **OPTIONS)
    np.testing.assert_array_equal(_read(tmp_path / "reordered.tif"), _read(tmp_path / "original.tif"))


def test_msi_identity_that_contradicts_the_metadata_is_refused(tmp_path):
    with pytest.raises(InputError, match="give the bands in the raster's order"):
        fuse(LR, MSI, str(tmp_path / "o.tif"), method="gsa", msi_bands=MsiBands.parse("sentinel2", "B4,B3,B2,B8"),
             **OPTIONS)
    with pytest.raises(InputError, match="describes 3 bands"):
        fuse(LR, MSI, str(tmp_path / "o.tif"), method="gsa", msi_bands=MsiBands.parse(wavelengths="490,560,665"),
             **OPTIONS)
    with pytest.raises(InputError, match="go together"):
        MsiBands.parse("sentinel2")


def test_cli_fuse_takes_a_product_a_mask_and_msi_wavelengths(tmp_path, capsys):
    folder, _ = _enmap_product(tmp_path)
    mask, _ = _mask(MSI, tmp_path / "m.tif", slice(0, 9), slice(0, 9))
    out = tmp_path / "cli.tif"
    status = main(["fuse", str(folder), MSI, str(out), "--method", "gsa", "--device", "cpu",
                   "--no-shift-correction", "--msi-mask", mask, "--msi-wavelengths", "492,560,665,833",
                   "--msi-fwhm", "66,36,31,106"])
    assert status == 0
    text = capsys.readouterr().out
    assert "EnMAP" in text and "agree with --msi-wavelengths" in text
    assert np.isnan(_read(out)[:, :9, :9]).all()
