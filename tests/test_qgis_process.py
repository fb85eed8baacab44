"""The plugin through ``qgis_process`` exactly as a batch user runs it (``scripts/qgis_process``)."""

import json
import subprocess
from pathlib import Path

import pytest
import rasterio

pytestmark = pytest.mark.qgis
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample"
WRAPPER = ROOT / "scripts" / "qgis_process"


def qgis_process(*args, check=True):
    """Run the wrapper; return (exit status, stdout, stderr)."""
    if not (ROOT / ".qgis" / "plugins" / "csakd_fusion").exists():
        pytest.skip("the plugin is not registered; run `make setup`")
    result = subprocess.run([str(WRAPPER), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"qgis_process {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.returncode, result.stdout, result.stderr


def run_json(algorithm, **parameters):
    """``qgis_process --json run ALGORITHM -- KEY=VALUE...`` → the parsed JSON."""
    _, out, _ = qgis_process("--json", "run", algorithm, "--", *[f"{k}={v}" for k, v in parameters.items()])
    return json.loads(out)


def test_list_shows_the_algorithms():
    _, out, _ = qgis_process("list")
    for algorithm in ("csakd:fuse", "csakd:coregister", "csakd:train", "csakd:simulate", "csakd:evaluate"):
        assert algorithm in out


def test_fuse_bicubic_writes_a_georeferenced_geotiff(tmp_path):
    output = tmp_path / "fused.tif"
    result = run_json("csakd:fuse", LR_HSI=SAMPLE / "enmap_lr_hsi.tif", HR_MSI=SAMPLE / "s2_hr_msi.tif",
                      METHOD="bicubic", SHIFT_CORRECTION="false", OUTPUT=output)
    assert Path(result["results"]["OUTPUT"]) == output
    assert result["results"]["SCALE"] == 3
    with rasterio.open(SAMPLE / "s2_hr_msi.tif") as msi, rasterio.open(output) as fused:
        assert fused.crs == msi.crs
        assert fused.transform.almost_equals(msi.transform)
        assert (fused.width, fused.height) == (msi.width, msi.height)
        assert fused.count == 224
        assert fused.tags(50)["wavelength"].startswith("6")  # band 50 of EnMAP lies near 6xx nm
        data = fused.read(50, masked=True)
    assert 0.0 < float(data.mean()) < 1.0  # reflectance (GDAL scale applied to the input)


def test_bad_input_is_one_clear_message_not_a_traceback(tmp_path):
    status, out, err = qgis_process("run", "csakd:fuse", "--", f"LR_HSI={SAMPLE / 's2_hr_msi.tif'}",
                                    f"HR_MSI={SAMPLE / 'enmap_lr_hsi.tif'}", "METHOD=bicubic",
                                    f"OUTPUT={tmp_path / 'x.tif'}", check=False)
    assert status != 0
    assert "Traceback" not in out + err
    assert "swap the two inputs" in out + err
    assert not (tmp_path / "x.tif").exists()


def test_shipped_model_simulate_fuse_evaluate_runs(tmp_path):
    tile = ROOT.parent / "shared" / "data" / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif"
    if not tile.exists():
        pytest.skip("shared data not present")
    result = run_json(ROOT / "resources" / "processing_models" / "simulate_fuse_evaluate.model3",
                      reference=tile, scale=4, method="gsa", **{"fuse:fused": tmp_path / "fused.tif",
                                                               "evaluate:report": tmp_path / "report.html"})
    assert Path(result["results"]["fuse:fused"]).exists()
    assert "PSNR" in (tmp_path / "report.html").read_text()
    with rasterio.open(tmp_path / "fused.tif") as fused:
        assert (fused.width, fused.height, fused.count) == (32, 32, 224)


def test_shipped_model_coregister_fuse_runs(tmp_path):
    result = run_json(ROOT / "resources" / "processing_models" / "coregister_fuse.model3",
                      lr_hsi=SAMPLE / "enmap_lr_hsi.tif", hr_msi=SAMPLE / "s2_hr_msi.tif", method="bicubic",
                      **{"fuse:fused": tmp_path / "fused.tif", "coregister:aligned": tmp_path / "aligned.tif"})
    with rasterio.open(result["results"]["fuse:fused"]) as fused:
        assert (fused.width, fused.height, fused.count) == (63, 63, 224)


@pytest.mark.slow
def test_train_then_evaluate_through_qgis_process(tmp_path):
    """Supervised training from the sample reference (2 steps), then the model's cards and an evaluation."""
    model = tmp_path / "tiny.safetensors"
    result = run_json("csakd:train", REFERENCE=SAMPLE / "reference_hr_hsi.tif", SCALE=3, MODE="student",
                      TIME_BUDGET=0, STEPS=2, OUTPUT=model)
    assert Path(result["results"]["OUTPUT"]) == model and model.exists()
    assert result["results"]["VAL_PSNR"] > 0
    _, out, _ = qgis_process("--json", "run", "csakd:evaluate", "--", f"REFERENCE={SAMPLE / 'reference_hr_hsi.tif'}",
                             f"FUSED={SAMPLE / 'reference_hr_hsi.tif'}", "SCALE=3")
    metrics = json.loads(out)["results"]
    assert metrics["SAM"] == 0.0 and metrics["SSIM"] == pytest.approx(1.0)


def test_coregister_takes_a_product_file(tmp_path):
    from test_inputs import ENMAP, _enmap_product

    folder, _ = _enmap_product(tmp_path)  # the sample LR-HSI as an EnMAP folder
    output = tmp_path / "aligned.tif"
    result = run_json("csakd:coregister", LR_PRODUCT=folder / f"{ENMAP}-METADATA.XML", HR_MSI=SAMPLE / "s2_hr_msi.tif",
                      SHIFT_CORRECTION="false", OUTPUT=output)
    assert Path(result["results"]["OUTPUT"]) == output and result["results"]["SCALE"] == 3
    with rasterio.open(output) as aligned, rasterio.open(SAMPLE / "enmap_lr_hsi.tif") as lr:
        assert aligned.count == lr.count == 224
        assert [aligned.tags(i)["wavelength"] for i in (1, 50, 224)] == [lr.tags(i)["wavelength"] for i in (1, 50, 224)]
        assert (aligned.width, aligned.height) == (21, 21)
        values = aligned.read(50, masked=True)
    assert 0.0 < float(values.mean()) < 1.0  # reflectance: the product's DN times its gain
