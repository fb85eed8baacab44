"""Every algorithm in-process (offscreen QgsApplication + processing.run), with outputs checked."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis
pytest.importorskip("qgis.core")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample"
ENMAP_TILE = ROOT.parent / "shared" / "data" / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif"


@pytest.fixture(scope="module")
def processing():
    from qgis_app import registered_plugin

    registered_plugin()
    import processing as qgis_processing

    return qgis_processing


def feedback(cancel_after=None):
    """A QgsProcessingFeedback that cancels itself after ``cancel_after`` progress reports."""
    from qgis.core import QgsProcessingFeedback

    fb = QgsProcessingFeedback()
    if cancel_after is not None:
        calls = []

        def count(_progress):
            calls.append(1)
            if len(calls) >= cancel_after:
                fb.cancel()

        fb.progressChanged.connect(count)
    return fb


def test_simulate_then_evaluate_identity(processing, tmp_path):
    if not ENMAP_TILE.exists():
        pytest.skip("shared data not present")
    sim = processing.run("csakd:simulate", {
        "REFERENCE": str(ENMAP_TILE), "SENSOR": "sentinel2", "BANDS": "B2,B3,B4,B8", "SCALE": 4, "SNR": 40,
        "LR_HSI": str(tmp_path / "lr.tif"), "HR_MSI": str(tmp_path / "msi.tif"),
        "REFERENCE_OUT": str(tmp_path / "ref.tif")})
    with rasterio.open(sim["LR_HSI"]) as lr, rasterio.open(sim["HR_MSI"]) as msi:
        assert (lr.width, lr.height, lr.count) == (8, 8, 224)
        assert (msi.width, msi.height, msi.count) == (32, 32, 4)
        assert lr.transform.a == 4 * msi.transform.a and lr.transform.c == msi.transform.c
    evaluation = processing.run("csakd:evaluate", {
        "REFERENCE": sim["REFERENCE_OUT"], "FUSED": sim["REFERENCE_OUT"],
        "REPORT": str(tmp_path / "report.html")})
    assert evaluation["SAM"] == 0.0 and evaluation["SSIM"] == pytest.approx(1.0)
    assert "<svg" in (tmp_path / "report.html").read_text()


def test_fuse_gsa_beats_bicubic_on_the_sample(processing, tmp_path):
    scores = {}
    for method in ("bicubic", "gsa"):
        out = processing.run("csakd:fuse", {
            "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
            "METHOD": method, "SHIFT_CORRECTION": False, "OUTPUT": str(tmp_path / f"{method}.tif")})
        assert out["SCALE"] == 3
        scores[method] = processing.run("csakd:evaluate", {
            "REFERENCE": str(SAMPLE / "reference_hr_hsi.tif"), "FUSED": out["OUTPUT"], "SCALE": 3})
    assert scores["gsa"]["PSNR"] > scores["bicubic"]["PSNR"] + 1.0
    assert scores["gsa"]["SAM"] < scores["bicubic"]["SAM"]


def test_fuse_keeps_nodata_of_the_masked_cloud_and_reports(processing, tmp_path):
    out = processing.run("csakd:fuse", {
        "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
        "METHOD": "bicubic", "SHIFT_CORRECTION": False, "OUTPUT": str(tmp_path / "f.tif"),
        "REPORT": str(tmp_path / "run.html")})
    page = (tmp_path / "run.html").read_text()
    assert "data:image/png;base64" in page and "EPSG:32633" in page
    with rasterio.open(out["OUTPUT"]) as fused, rasterio.open(SAMPLE / "s2_hr_msi.tif") as msi:
        fused_mask = fused.read_masks(20) > 0
        msi_mask = msi.read_masks(1) > 0
    assert not fused_mask[~msi_mask].any()      # the MSI's masked cloud stays nodata
    assert fused_mask[msi_mask].mean() > 0.95


def test_coregister_outputs_the_aligned_lr_grid(processing, tmp_path):
    out = processing.run("csakd:coregister", {
        "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
        "SHIFT_CORRECTION": True, "OUTPUT": str(tmp_path / "aligned.tif")})
    assert out["SCALE"] == 3
    assert abs(out["SHIFT_X"]) < 0.25 and abs(out["SHIFT_Y"]) < 0.25  # the sample has no shift
    with rasterio.open(out["OUTPUT"]) as aligned, rasterio.open(SAMPLE / "s2_hr_msi.tif") as msi:
        assert aligned.transform.a == pytest.approx(3 * msi.transform.a)
        assert (aligned.width, aligned.height) == (21, 21)


def test_cancelled_fuse_leaves_no_output(processing, tmp_path):
    from qgis.core import QgsProcessingException

    target = tmp_path / "cancelled.tif"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("csakd:fuse", {
            "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
            "METHOD": "bicubic", "TILE_SIZE": 8, "OVERLAP": 2, "BATCH_SIZE": 1, "SHIFT_CORRECTION": False,
            "OUTPUT": str(target)}, feedback=feedback(cancel_after=2))
    assert list(tmp_path.iterdir()) == []


def test_missing_crs_is_one_clear_message(processing, tmp_path):
    from qgis.core import QgsProcessingException

    plain = tmp_path / "nocrs.tif"
    with rasterio.open(SAMPLE / "enmap_lr_hsi.tif") as src:
        profile = src.profile
        profile.pop("crs")
        profile.pop("transform")
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(QgsProcessingException) as error:
        processing.run("csakd:fuse", {"LR_HSI": str(plain), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
                                      "METHOD": "bicubic", "OUTPUT": str(tmp_path / "o.tif")})
    assert "CRS" in str(error.value) or "coordinate" in str(error.value).lower()
    assert "Traceback" not in str(error.value)
    assert not (tmp_path / "o.tif").exists()
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), ["nocrs.tif"])


@pytest.mark.slow
def test_train_scene_adaptive_then_fuse_with_the_trained_model(processing, tmp_path, geotiff, texture):
    from affine import Affine

    bands = 12
    wavelengths = np.linspace(430.0, 900.0, bands)
    hsi = texture(96, 96, bands, seed=3)
    lr = hsi.reshape(bands, 24, 4, 24, 4).mean(axis=(2, 4))
    msi = np.stack([hsi[i:i + 3].mean(axis=0) for i in (0, 3, 6, 9)])
    tags = [{"wavelength": f"{w:.1f}", "wavelength_units": "Nanometers", "fwhm": "20"} for w in wavelengths]
    lr_path = geotiff("lr.tif", lr, transform=Affine(40.0, 0, 366000.0, 0, -40.0, 5810000.0), band_tags=tags)
    msi_path = geotiff("msi.tif", msi.astype(np.float32), transform=Affine(10.0, 0, 366000.0, 0, -10.0, 5810000.0))
    model = tmp_path / "mine.safetensors"
    trained = processing.run("csakd:train", {
        "LR_HSI": str(lr_path), "HR_MSI": str(msi_path), "MODE": "kd", "TIME_BUDGET": 0, "STEPS": 3,
        "OUTPUT": str(model)})
    assert Path(trained["OUTPUT"]) == model and model.exists()
    assert (tmp_path / "mine.teacher.safetensors").exists()
    assert np.isfinite(trained["VAL_PSNR"])
    # the card says how the network does against the strongest classical method on the same rows
    assert trained["CLASSICAL_METHOD"] in ("gsa", "glp", "subspace", "subspace_bp")
    assert trained["GAIN_OVER_CLASSICAL"] == pytest.approx(trained["VAL_PSNR"] - trained["CLASSICAL_PSNR"])
    fused = processing.run("csakd:fuse", {
        "LR_HSI": str(lr_path), "HR_MSI": str(msi_path), "METHOD": "student", "MODEL_FILE": str(model),
        "SHIFT_CORRECTION": False, "OUTPUT": str(tmp_path / "fused.tif")})
    assert fused["MODEL_USED"] == "mine"
    with rasterio.open(fused["OUTPUT"]) as out:
        assert (out.width, out.height, out.count) == (96, 96, bands)
        assert float(out.tags(1)["wavelength"]) == pytest.approx(430.0)


def test_dialog_choices_match_the_engine(processing):
    # the dialogs list these without importing the engine (torch); they must not drift from it
    from algorithms.simulate import SENSORS
    from algorithms.train import PRESET_FAMILIES
    from csakd_qgis.simulation import srf
    from csakd_qgis.training import config as training

    assert PRESET_FAMILIES == training.PRESET_FAMILIES
    assert set(SENSORS) <= set(srf.PYRSR_SENSORS)


def _fuse_sample(processing, out, log=None, **extra):
    """Fuse the bundled sample through csakd:fuse; ``log`` (a list) receives the run's info lines."""
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            if log is not None:
                log.append(info)

    params = {"LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
              "SHIFT_CORRECTION": False, "OUTPUT": str(out), **extra}
    with rasterio.open(processing.run("csakd:fuse", params, feedback=Recorder())["OUTPUT"]) as ds:
        return ds.read(masked=True)


def test_fuse_on_a_dask_scheduler_equals_fusing_here(processing, tmp_path):
    distributed = pytest.importorskip("distributed")
    here = _fuse_sample(processing, tmp_path / "here.tif", METHOD="gsa")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        log = []
        there = _fuse_sample(processing, tmp_path / "there.tif", log, METHOD="gsa",
                             SCHEDULER=cluster.scheduler_address)
    assert any(line.startswith(f"cluster {cluster.scheduler_address}: 1 workers") for line in log), log
    np.testing.assert_array_equal(there.mask, here.mask)
    np.testing.assert_allclose(there.filled(0), here.filled(0), rtol=0, atol=1e-6)


def test_unreachable_scheduler_is_one_clear_message(processing, tmp_path):
    pytest.importorskip("distributed")
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="cannot reach the Dask scheduler"):
        _fuse_sample(processing, tmp_path / "o.tif", METHOD="bicubic", SCHEDULER="tcp://127.0.0.1:9")
    assert not (tmp_path / "o.tif").exists()


def test_fuse_with_the_onnxruntime_backend_matches_torch(processing, tmp_path):
    pytest.importorskip("onnxruntime")
    torch_out = _fuse_sample(processing, tmp_path / "torch.tif", METHOD="student")
    onnx_out = _fuse_sample(processing, tmp_path / "onnx.tif", METHOD="student", BACKEND="onnxruntime")
    np.testing.assert_array_equal(onnx_out.mask, torch_out.mask)
    np.testing.assert_allclose(onnx_out.filled(0), torch_out.filled(0), rtol=0, atol=1e-4)


def test_fuse_dialog_choices_come_from_the_engine_options(processing):
    from qgis.core import QgsApplication

    from csakd_qgis import options
    alg = QgsApplication.processingRegistry().algorithmById("csakd:fuse")
    assert alg.parameterDefinition("METHOD").options() == list(options.METHODS)
    assert alg.parameterDefinition("DEVICE").options() == list(options.DEVICES)  # mps included
    assert alg.parameterDefinition("BACKEND").options() == list(options.BACKENDS)
    assert alg.parameterDefinition("PRECISION").options() == list(options.PRECISIONS)
    models = alg.parameterDefinition("MODEL").options()
    assert models[0] == "auto" and "enmap_s2_x3" in models  # the bundled model, by name


def test_fuse_refuses_an_overlap_above_a_quarter_of_the_tile(processing, tmp_path):
    from qgis.core import QgsProcessingException
    sample = Path(__file__).resolve().parents[1] / "resources" / "sample"
    with pytest.raises(QgsProcessingException, match="more than a quarter of the tile"):
        processing.run("csakd:fuse", {
            "LR_HSI": str(sample / "enmap_lr_hsi.tif"), "HR_MSI": str(sample / "s2_hr_msi.tif"), "METHOD": "bicubic",
            "TILE_SIZE": 16, "OVERLAP": 8, "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_fuse_outputs_the_method_and_the_degradation_it_estimated(processing, tmp_path):
    sample = Path(__file__).resolve().parents[1] / "resources" / "sample"
    result = processing.run("csakd:fuse", {
        "LR_HSI": str(sample / "enmap_lr_hsi.tif"), "HR_MSI": str(sample / "s2_hr_msi.tif"),
        "OUTPUT": str(tmp_path / "o.tif")})
    assert result["METHOD_USED"] == result["MODEL_USED"] == "subspace_bp"  # auto: the card shows no gain
    assert result["PSF_SIGMA"] == pytest.approx(1.482, rel=0.1) and 30 < result["SNR_LR_DB"] < 50
    assert result["EMPTY_BANDS"] == "130,131,132,133,134,135"  # EnMAP's water-vapour bands, flagged bad too


def test_fuse_takes_a_product_file_and_a_mask_and_opens_in_true_colour(processing, tmp_path):
    from qgis.core import QgsRasterLayer
    from test_inputs import ENMAP, _enmap_product, _mask

    folder, _ = _enmap_product(tmp_path)
    mask, _ = _mask(SAMPLE / "s2_hr_msi.tif", tmp_path / "m.tif", slice(0, 9), slice(0, 9))
    out = processing.run("csakd:fuse", {
        "LR_PRODUCT": str(folder / f"{ENMAP}-METADATA.XML"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"),
        "MSI_MASK": mask, "MSI_SENSOR": "sentinel2", "MSI_BANDS": "B2,B3,B4,B8", "METHOD": "gsa",
        "SHIFT_CORRECTION": False, "OUTPUT": str(tmp_path / "f.tif")})
    with rasterio.open(out["OUTPUT"]) as fused:
        assert not (fused.read_masks(20)[:9, :9] > 0).any()
        waves = [float(fused.tags(i)["wavelength"]) for i in fused.indexes]
    layer = QgsRasterLayer(out["OUTPUT"], "fused")
    renderer = layer.renderer()
    assert renderer.type() == "multibandcolor"
    chosen = [waves[b - 1] for b in (renderer.redBand(), renderer.greenBand(), renderer.blueBand())]
    for got, want in zip(chosen, (640.0, 550.0, 470.0)):
        assert abs(got - want) == min(abs(w - want) for w in waves)
    enhancement = renderer.redContrastEnhancement()
    assert enhancement.minimumValue() < enhancement.maximumValue()


def logging_feedback():
    """A QgsProcessingFeedback whose ``lines`` keeps the info lines pushed (what the product readers said)."""
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)

    return Recorder()


def test_every_algorithm_that_reads_an_lr_hsi_or_hr_msi_takes_product_files(processing):
    from qgis.core import QgsApplication, QgsProcessingParameterRasterLayer

    pair = {"LR_PRODUCT", "MSI_PRODUCT"}
    products, masks = {}, {}
    for algorithm in QgsApplication.processingRegistry().providerById("csakd").algorithms():
        if not any(isinstance(algorithm.parameterDefinition(name), QgsProcessingParameterRasterLayer)
                   for name in ("LR_HSI", "HR_MSI")):
            continue  # simulate writes them
        products[algorithm.name()] = {name for name in pair | {"REFERENCE_PRODUCT"}
                                      if algorithm.parameterDefinition(name) is not None}
        masks[algorithm.name()] = algorithm.parameterDefinition("MSI_MASK") is not None
        assert "product file" in algorithm.shortHelpString(), algorithm.name()
    # evaluate's reference is on the fused grid, so no product; its consistency check takes no masks
    assert products == {"fuse": pair, "coregister": pair, "evaluate": pair, "train": pair | {"REFERENCE_PRODUCT"}}
    assert masks == {"fuse": True, "coregister": True, "evaluate": False, "train": True}


def _bands_and_values(path):
    """``(wavelengths, values with nodata as NaN)`` of a raster."""
    with rasterio.open(path) as ds:
        return ([float(ds.tags(i)["wavelength"]) for i in ds.indexes],
                ds.read(masked=True).astype(np.float64).filled(np.nan))


def test_coregister_takes_a_product_file_and_masks(processing, tmp_path):
    from test_inputs import ENMAP, _enmap_product, _mask

    folder, _ = _enmap_product(tmp_path)  # the sample LR-HSI as an EnMAP folder with a cloud layer
    msi_mask, _ = _mask(SAMPLE / "s2_hr_msi.tif", tmp_path / "m.tif", slice(0, 9), slice(0, 9))
    common = {"HR_MSI": str(SAMPLE / "s2_hr_msi.tif"), "SHIFT_CORRECTION": True}
    log = logging_feedback()
    product = processing.run("csakd:coregister", {
        **common, "LR_PRODUCT": str(folder / f"{ENMAP}-METADATA.XML"), "MSI_MASK": msi_mask,
        "OUTPUT": str(tmp_path / "product.tif")}, feedback=log)
    # the same raster with the product's cloud layer and the MSI mask given as layers
    layers = processing.run("csakd:coregister", {
        **common, "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "LR_MASK": str(folder / f"{ENMAP}-QL_QUALITY_CLOUD.TIF"),
        "MSI_MASK": msi_mask, "OUTPUT": str(tmp_path / "layers.tif")})
    unmasked = processing.run("csakd:coregister", {
        **common, "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif"), "OUTPUT": str(tmp_path / "unmasked.tif")})
    assert product["NOTES"] == layers["NOTES"] != unmasked["NOTES"]  # the masks reach the shift estimate
    assert (product["SHIFT_X"], product["SHIFT_Y"], product["SCALE"]) == (layers["SHIFT_X"], layers["SHIFT_Y"], 3)
    waves, values = _bands_and_values(product["OUTPUT"])
    want_waves, want_values = _bands_and_values(layers["OUTPUT"])
    assert len(waves) == 224 and waves == want_waves
    np.testing.assert_allclose(values, want_values, rtol=0, atol=1e-6)  # DN x the product's gain
    assert any(line.startswith("LR-HSI: EnMAP L2A: 224 bands") for line in log.lines), log.lines
    assert any(line.startswith("LR-HSI: EnMAP L2A: mask = nonzero in QL_QUALITY_CLOUD") for line in log.lines)
    assert f"HR-MSI: pixels where {msi_mask} is nonzero are excluded" in log.lines


def test_evaluate_takes_a_product_file_for_the_no_reference_check(processing, tmp_path):
    from test_inputs import ENMAP, _enmap_product

    folder, _ = _enmap_product(tmp_path)
    common = {"FUSED": str(SAMPLE / "reference_hr_hsi.tif"), "HR_MSI": str(SAMPLE / "s2_hr_msi.tif"), "SCALE": 3}
    log = logging_feedback()
    product = processing.run("csakd:evaluate", {**common, "LR_PRODUCT": str(folder / f"{ENMAP}-METADATA.XML")},
                             feedback=log)
    layer = processing.run("csakd:evaluate", {**common, "LR_HSI": str(SAMPLE / "enmap_lr_hsi.tif")})
    names = [name for name in product if name.startswith("NR_")]
    assert len(names) == 7 and all(np.isfinite(product[name]) for name in names)
    assert {name: product[name] for name in names} == pytest.approx({name: layer[name] for name in names})
    assert any(line.startswith("LR-HSI: EnMAP L2A: 224 bands") for line in log.lines), log.lines


def _enmap_folder(root, reflectance, transform, waves):
    """``reflectance`` (C, H, W) written as an EnMAP L2A folder (int16 DN, gain 1e-4); returns its METADATA.XML."""
    from test_inputs import ENMAP

    folder = root / ENMAP
    folder.mkdir()
    dn = np.round(reflectance * 10000).astype(np.int16)
    with rasterio.open(folder / f"{ENMAP}-SPECTRAL_IMAGE.TIF", "w", driver="GTiff", width=dn.shape[2],
                       height=dn.shape[1], count=dn.shape[0], dtype="int16", crs="EPSG:32633", transform=transform,
                       nodata=-32768) as ds:
        ds.write(dn)
    entries = "".join(f'<bandID number="{n}"><wavelengthCenterOfBand>{w}</wavelengthCenterOfBand>'
                      "<FWHMOfBand>20</FWHMOfBand><GainOfBand>0.0001</GainOfBand><OffsetOfBand>0</OffsetOfBand>"
                      "</bandID>" for n, w in enumerate(waves, start=1))
    metadata = folder / f"{ENMAP}-METADATA.XML"
    metadata.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<level_X><metadata><name>EnMAP</name></metadata>'
                        f"<specific><bandCharacterisation>{entries}</bandCharacterisation></specific></level_X>\n")
    return metadata


@pytest.mark.slow
def test_train_takes_a_product_file_and_masks(processing, tmp_path, geotiff, texture):
    from affine import Affine
    from qgis.core import QgsProcessingException
    from test_inputs import _mask

    from csakd_qgis.models.checkpoint import read_card

    bands, waves = 8, [float(w) for w in np.linspace(450.0, 850.0, 8)]
    hsi = texture(72, 72, bands, seed=5)
    metadata = _enmap_folder(tmp_path, hsi.reshape(bands, 24, 3, 24, 3).mean(axis=(2, 4)),
                             Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0), waves)
    msi = geotiff("msi.tif", np.stack([hsi[i:i + 2].mean(axis=0) for i in (0, 2, 4, 6)]),
                  transform=Affine(10.0, 0, 366000.0, 0, -10.0, 5810000.0))
    everything, _ = _mask(msi, tmp_path / "all.tif", slice(None), slice(None))
    scene = {"LR_PRODUCT": str(metadata), "HR_MSI": str(msi), "MODE": "student", "TIME_BUDGET": 0, "STEPS": 2,
             "DEVICE": "cpu"}
    with pytest.raises(QgsProcessingException, match="HR-MSI has no valid"):  # the mask leaves nothing to train on
        processing.run("csakd:train", {**scene, "MSI_MASK": everything, "OUTPUT": str(tmp_path / "no.safetensors")})
    log = logging_feedback()
    trained = processing.run("csakd:train", {**scene, "OUTPUT": str(tmp_path / "mine.safetensors")}, feedback=log)
    card = read_card(trained["OUTPUT"])
    assert card.lr_bands.wavelengths_nm == pytest.approx(waves) and card.scale == 3 and card.msi.count == 4
    assert any(line.startswith(f"LR-HSI: EnMAP L2A: {bands} bands") for line in log.lines), log.lines
    with pytest.raises(QgsProcessingException, match="LR_MASK: a mask without the LR-HSI"):
        processing.run("csakd:train", {"REFERENCE": str(SAMPLE / "reference_hr_hsi.tif"), "SCALE": 3,
                                       "LR_MASK": everything, "OUTPUT": str(tmp_path / "x.safetensors")})
