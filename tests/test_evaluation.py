"""csakd_qgis.quality.evaluation: metrics of fused rasters against hand-worked numbers."""

import math

import numpy as np
import pytest
from affine import Affine

from csakd_qgis.errors import GridError, InputError
from csakd_qgis.quality.evaluation import EvaluationResult, evaluate_rasters
from csakd_qgis.simulation.simulate import simulate_rasters

#: Per-band offsets of the fused image, powers of two so float32 keeps them exact.
OFFSETS = (1 / 8, 1 / 64, 1 / 32)
#: Checkerboard amplitude of each reference band around its mean 0.5.
AMPLITUDES = (1 / 4, 1 / 8, 1 / 16)
WAVELENGTHS = [420.0 + 15.0 * k for k in range(36)]


def _pair():
    """Reference ``(4, 16, 16)``: band b is 0.5 +/- AMPLITUDES[b] in a checkerboard; band 3 is bad.

    The fused image is the reference plus OFFSETS[b] in band b, plus 10 in
    the bad band, and nodata (-9999) at pixels (0, 0) and (0, 1), a + and a
    - of the checkerboard, so the band means stay 0.5.
    """
    sign = np.where(np.add.outer(np.arange(16), np.arange(16)) % 2 == 0, 1.0, -1.0)
    ref = np.stack([0.5 + a * sign for a in AMPLITUDES] + [0.5 + 0.25 * sign]).astype(np.float32)
    fused = ref + np.array(OFFSETS + (10.0,), dtype=np.float32)[:, None, None]
    fused[:, 0, :2] = -9999.0
    return ref, fused


def _write_pair(geotiff):
    ref, fused = _pair()
    tags = [{}, {}, {}, {"bbl": "0"}]
    return (str(geotiff("ref.tif", ref, band_tags=tags)),
            str(geotiff("fused.tif", fused, band_tags=tags, nodata=-9999.0)))


def test_reference_metrics_are_the_hand_worked_numbers(geotiff):
    reference, fused = _write_pair(geotiff)
    result = evaluate_rasters(reference, fused, scale=2, data_range=1.0)
    values = result.sections["reference"]

    assert values["valid_pixels"] == 16 * 16 - 2  # the two nodata pixels are left out
    # PSNR per band 20 log10(1 / d_b) with d = 2^-3, 2^-6, 2^-5: mean (20 / 3) log10(2^14)
    assert values["psnr"] == pytest.approx(280.0 / 3.0 * math.log10(2.0), rel=1e-6)
    # RMSE over bands and pixels: sqrt(mean(d_b^2)) = sqrt(69 / 12288); the bad band's +10 is not in it
    assert values["rmse"] == pytest.approx(math.sqrt(69.0 / 12288.0), rel=1e-6)
    # ERGAS (100 / scale) sqrt(mean_b (RMSE_b / mean_b)^2), every band mean 0.5, scale 2
    assert values["ergas"] == pytest.approx(50.0 * 2.0 * math.sqrt(69.0 / 12288.0), rel=1e-6)
    assert values["cc"] == pytest.approx(1.0)  # a constant offset keeps the correlation perfect
    assert values["scale"] == 2.0 and values["peak"] == "range"


def test_sam_is_the_mean_angle_between_spectra(geotiff):
    reference, fused = _write_pair(geotiff)
    ref, fus = _pair()
    r, f = ref[:3].reshape(3, -1)[:, 2:].astype(np.float64), fus[:3].reshape(3, -1)[:, 2:].astype(np.float64)
    cos = (r * f).sum(0) / (np.linalg.norm(r, axis=0) * np.linalg.norm(f, axis=0))
    expected = float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    assert expected > 1.0
    value = evaluate_rasters(reference, fused, data_range=1.0).sections["reference"]["sam"]
    assert value == pytest.approx(expected, rel=1e-5)


def test_flat_names_are_upper_case_and_skip_text():
    result = EvaluationResult({"reference": {"psnr": 30.0, "peak": "range", "valid_pixels": 4},
                               "consistency": {"qnr": 0.9}})
    assert result.flat() == {"PSNR": 30.0, "VALID_PIXELS": 4.0, "NR_QNR": 0.9}


def test_a_reference_is_consistent_with_its_own_simulated_inputs(geotiff, tmp_path, texture):
    cube = texture(32, 32, len(WAVELENGTHS), seed=2)
    tags = [{"wavelength": str(w), "fwhm": "15", "wavelength_units": "Nanometers"} for w in WAVELENGTHS]
    reference = str(geotiff("ref.tif", cube, band_tags=tags))
    lr, msi = str(tmp_path / "lr.tif"), str(tmp_path / "msi.tif")
    simulate_rasters(reference, lr, msi, scale=4, mtf=0.3)

    same = evaluate_rasters(None, reference, lr_hsi=lr, hr_msi=msi, mtf=0.3).sections["consistency"]
    # degraded back with the simulator's own PSF and responses: equal up to float32 storage
    assert same["psnr_lr"] > 100.0 and same["psnr_msi"] > 100.0
    assert same["sam_lr"] < 1e-3 and same["sam_msi"] < 1e-3
    other = evaluate_rasters(None, reference, lr_hsi=lr, hr_msi=msi, mtf=0.1).sections["consistency"]
    assert other["psnr_lr"] < 60.0  # a different PSF no longer reproduces the LR-HSI


def test_refusals_name_what_is_wrong(geotiff, tmp_path):
    reference, fused = _write_pair(geotiff)
    with pytest.raises(InputError, match="reference"):
        evaluate_rasters(None, fused)
    with pytest.raises(InputError, match="both"):
        evaluate_rasters(reference, fused, lr_hsi=reference)
    moved = str(geotiff("moved.tif", _pair()[0], transform=Affine(30.0, 0.0, 366030.0, 0.0, -30.0, 5810000.0)))
    with pytest.raises(GridError, match="same grid"):
        evaluate_rasters(moved, fused)
    small = str(geotiff("small.tif", _pair()[0][:, :8, :8]))
    with pytest.raises(GridError, match="one grid"):
        evaluate_rasters(small, fused)
    three = str(geotiff("three.tif", _pair()[0][:3]))
    with pytest.raises(InputError, match="3 bands"):
        evaluate_rasters(three, fused)


def test_html_report_is_written(geotiff, tmp_path):
    reference, fused = _write_pair(geotiff)
    out = tmp_path / "report.html"
    evaluate_rasters(reference, fused, data_range=1.0, report_html=str(out))
    page = out.read_text()
    assert "Per-band PSNR" in page and "Error map" in page and "<svg" in page
