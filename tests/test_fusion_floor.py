"""The classical floor in the engine: degradation estimated from the pair, PSF-matched methods, auto, empty bands."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from csakd_qgis.fusion.engine import fuse
from csakd_qgis.io.read import read_info, read_window
from csakd_qgis.quality.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample"
STUDENT = ROOT / "resources" / "models" / "enmap_s2_x3.safetensors"


def _reference():
    data, valid = read_window(str(SAMPLE / "reference_hr_hsi.tif"))
    good = np.array([b.good for b in read_info(str(SAMPLE / "reference_hr_hsi.tif")).bands])
    return data, valid, good


def _score(path):
    ref, valid, good = _reference()
    fused, _ = read_window(str(path))
    return psnr(ref[good], fused[good], valid)  # the convention of 'csakd evaluate' (peak = data range)


@pytest.mark.parametrize("method, floor", [("gsa", 39.8), ("glp", 39.3), ("subspace", 39.3), ("subspace_bp", 40.2)])
def test_classical_methods_on_the_bundled_sample_reach_the_psf_matched_numbers(tmp_path, method, floor):
    # the engine's old GSA, fitted against block means, scored 35.8 dB here; the student 36.2
    report = fuse(str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif"), str(tmp_path / "o.tif"),
                  method=method, device="cpu")
    assert report.method == method and report.model == ""
    assert _score(tmp_path / "o.tif") > floor
    # the sample was simulated with MTF 0.3 at scale 3: sigma = 3 / pi * sqrt(-2 ln 0.3) = 1.482 output pixels
    assert report.degradation["sigma"] == pytest.approx(1.482, rel=0.1)
    assert max(abs(v) for v in report.degradation["offset"]) < 0.05
    assert ("subspace_rank" in report.degradation) == method.startswith("subspace")


def test_auto_takes_the_classical_floor_when_the_card_does_not_show_a_gain(tmp_path):
    report = fuse(str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif"), str(tmp_path / "o.tif"),
                  device="cpu")
    assert report.method == "subspace_bp"  # the sample's LR-HSI SNR is about 39 dB, below 45
    (why,) = [n for n in report.notes if n.startswith("method auto:")]
    assert "'enmap_s2_x3' fits, but its card does not show it beating the classical methods" in why
    assert "back-projected onto the LR-HSI" in why
    assert not any("found nothing to correct" in n for n in report.notes)


def test_auto_takes_a_network_whose_card_shows_a_gain(tmp_path):
    from csakd_qgis.fusion.methods import CLASSICAL_GAIN_KEY
    from csakd_qgis.models.checkpoint import load_checkpoint, save_checkpoint

    network, card = load_checkpoint(STUDENT)
    better = dataclasses.replace(card, name="better", metrics={**card.metrics, CLASSICAL_GAIN_KEY: 1.25})
    save_checkpoint(tmp_path / "better.safetensors", network, better)
    report = fuse(str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif"), str(tmp_path / "o.tif"),
                  model=str(tmp_path / "better.safetensors"), device="cpu")
    assert (report.method, report.model) == ("student", "better")
    assert any("'better': +1.25 dB over classical on validation" in n for n in report.notes)


def test_auto_with_a_named_model_that_does_not_fit_is_an_error(geotiff, texture, tmp_path):
    from csakd_qgis.errors import ModelMismatchError
    lr = geotiff("lr.tif", texture(12, 12, 8, seed=1), transform=Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0))
    msi = geotiff("msi.tif", texture(36, 36, 3, seed=2), transform=Affine(10.0, 0, 366000.0, 0, -10.0, 5810000.0))
    with pytest.raises(ModelMismatchError, match="224 HSI bands"):
        fuse(str(lr), str(msi), str(tmp_path / "o.tif"), model=str(STUDENT), device="cpu")
    # with no model named, a scene no installed network fits is fused by the classical floor
    report = fuse(str(lr), str(msi), str(tmp_path / "o.tif"), device="cpu")
    assert report.method in ("gsa", "subspace_bp")
    assert any("no installed network fits the inputs" in n for n in report.notes)


def test_a_band_without_any_value_is_a_bad_band_written_as_nodata(geotiff, texture, tmp_path):
    """Water-vapour bands all nodata and no bbl (as after a plain gdal_translate) used to stop the fusion."""
    cube = texture(16, 16, 10, seed=3)
    cube[[4, 7]] = -32768.0
    lr = geotiff("lr.tif", cube, transform=Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0), nodata=-32768.0)
    msi = geotiff("msi.tif", texture(48, 48, 3, seed=4), transform=Affine(10.0, 0, 366000.0, 0, -10.0, 5810000.0))
    assert all(b.good for b in read_info(str(lr)).bands)
    report = fuse(str(lr), str(msi), str(tmp_path / "o.tif"), method="gsa", device="cpu")
    assert report.empty_bands == (5, 8)
    assert any("bands 5, 8" in n and "bad bands" in n for n in report.notes)
    data, valid = read_window(str(tmp_path / "o.tif"))
    assert valid.mean() > 0.9  # the other bands are fused
    assert np.isnan(data[[4, 7]]).all() and np.isfinite(data[[0, 1, 2, 3, 5, 6, 8, 9]][:, valid]).all()
    out = read_info(str(tmp_path / "o.tif"))
    assert [b.good for b in out.bands] == [k not in (4, 7) for k in range(10)]
    assert json.loads(json.dumps(report.to_dict()))["empty_bands"] == [5, 8]


def test_degradation_is_estimated_on_a_simulated_pair_of_known_blur(tmp_path):
    """A pair simulated from the sample's reference at scale 2 with MTF 0.2 (sigma 0.81) and a 0.3 px shift."""
    from csakd_qgis.simulation.simulate import simulate_rasters

    simulate_rasters(str(SAMPLE / "reference_hr_hsi.tif"), str(tmp_path / "lr.tif"), str(tmp_path / "msi.tif"),
                     scale=2, mtf=0.2, shift=(0.3, 0.0))
    report = fuse(str(tmp_path / "lr.tif"), str(tmp_path / "msi.tif"),
                  str(tmp_path / "o.tif"), method="gsa", device="cpu", shift_correction=False)
    d = report.degradation
    assert d["reliable"] and d["sigma"] == pytest.approx(2 / np.pi * np.sqrt(-2 * np.log(0.2)), rel=0.1)
    assert d["offset"][0] == pytest.approx(0.3, abs=0.05) and abs(d["offset"][1]) < 0.05
    srf = np.asarray(d["srf"])
    assert srf.shape == (4, 224) and np.allclose(srf.sum(axis=1), 1.0, atol=1e-6)
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.count == 224
