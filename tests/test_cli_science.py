import json

import numpy as np
import pytest
import rasterio
from conftest import UTM33_30M, write_geotiff

from csakd_qgis.cli import main
from csakd_qgis.io.read import read_info, read_window


def _synthetic(tmp_path, size=16, bands=40):
    rng = np.random.default_rng(0)
    wl = np.linspace(420, 900, bands)
    data = (1000 + 500 * rng.random((bands, size, size))).astype(np.float32)
    tags = [{"wavelength": f"{w:.2f}", "wavelength_units": "Nanometers", "fwhm": "12"} for w in wl]
    return write_geotiff(tmp_path / "ref.tif", data, band_tags=tags), data, wl


def test_simulate_then_evaluate_end_to_end(tmp_path, capsys):
    ref, data, wl = _synthetic(tmp_path)
    out = tmp_path / "pair"
    assert main(["simulate", str(ref), str(out), "--scale", "4", "--bands", "B2,B3,B4,B8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lr_shape"] == [40, 4, 4] and result["msi_bands"] == ["B2", "B3", "B4", "B8"]
    lr, msi = read_info(str(out / "lr_hsi.tif")), read_info(str(out / "hr_msi.tif"))
    assert lr.transform == UTM33_30M * UTM33_30M.scale(4) and lr.transform.c == UTM33_30M.c
    assert msi.transform == UTM33_30M and msi.crs == rasterio.crs.CRS.from_epsg(32633)
    assert lr.bands[5].wavelength_nm == pytest.approx(wl[5], abs=0.01)
    assert msi.bands[0].wavelength_nm == pytest.approx(492.4, abs=1.5)
    lr_data, _ = read_window(str(out / "lr_hsi.tif"))
    np.testing.assert_allclose(lr_data.mean(), data.mean(), rtol=0.01)

    # the reference against itself, plus the no-reference consistency with the simulated inputs
    refc = str(out / "reference.tif")
    assert main(["evaluate", refc, refc, "--lr-hsi", str(out / "lr_hsi.tif"),
                 "--hr-msi", str(out / "hr_msi.tif"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"]["psnr"] is None and report["reference"]["ssim"] == pytest.approx(1.0)
    assert report["reference"]["scale"] == 4.0
    assert report["consistency"]["psnr_lr"] > 60 and report["consistency"]["psnr_msi"] > 60


def test_evaluate_detects_offset_and_grid_mismatch(tmp_path, capsys):
    ref, data, _ = _synthetic(tmp_path)
    fused = write_geotiff(tmp_path / "fused.tif", data + 10.0)
    assert main(["evaluate", str(ref), str(fused), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["reference"]
    assert rep["rmse"] == pytest.approx(10.0, rel=1e-5)
    assert rep["psnr"] == pytest.approx(20 * np.log10(data.max() / 10.0), rel=1e-5)
    moved = write_geotiff(tmp_path / "moved.tif", data, transform=UTM33_30M * UTM33_30M.translation(1, 0))
    assert main(["evaluate", str(ref), str(moved)]) == 2
    assert "same grid" in capsys.readouterr().err


def test_evaluate_respects_nodata(tmp_path, capsys):
    _, data, _ = _synthetic(tmp_path)
    ref_data = data.copy()
    ref_data[:, :4] = -9999
    ref = write_geotiff(tmp_path / "r.tif", ref_data, nodata=-9999)
    fused_data = data.copy()
    fused_data[:, :4] = 0.0          # wrong only where the reference is nodata
    fused = write_geotiff(tmp_path / "f.tif", fused_data)
    assert main(["evaluate", str(ref), str(fused), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["reference"]
    assert rep["rmse"] == 0.0 and rep["valid_pixels"] == 12 * 16


@pytest.mark.slow
def test_simulate_enmap_tile(shared_data, tmp_path, capsys):
    tile = shared_data / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif"
    out = tmp_path / "enmap"
    assert main(["simulate", str(tile), str(out), "--scale", "3", "--snr", "35", "--shift", "0.2,-0.1",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["lr_shape"] == [224, 10, 10] and res["hr_shape"] == [224, 30, 30]
    lr = read_info(str(out / "lr_hsi.tif"))
    assert sum(not b.good for b in lr.bands) == 6
    assert lr.res == pytest.approx((90.0, 90.0))
    assert main(["evaluate", str(out / "reference.tif"), "--lr-hsi", str(out / "lr_hsi.tif"),
                 "--hr-msi", str(out / "hr_msi.tif"), "--json"]) == 0
    cons = json.loads(capsys.readouterr().out)["consistency"]
    assert 25 < cons["psnr_lr"] < 60 and 0 < cons["qnr"] <= 1
