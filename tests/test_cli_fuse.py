import json
import os

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from csakd_qgis.cli import main

torch.set_num_threads(1)
LR_T = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)


@pytest.fixture
def pair(geotiff, texture):
    """LR-HSI 4 bands 24 x 24 at 30 m (nodata corner) and HR-MSI 2 bands 72 x 72 at 10 m."""
    lr = texture(24, 24, 4, seed=5)
    lr[:, :4, :4] = -9999.0
    msi = texture(72, 72, 2, seed=6)
    lr_path = geotiff("lr.tif", lr, transform=LR_T, nodata=-9999.0)
    msi_path = geotiff("msi.tif", msi, transform=LR_T * Affine.scale(1 / 3))
    return str(lr_path), str(msi_path), lr


def test_fuse_json_report_and_output(pair, tmp_path, capsys):
    lr_path, msi_path, lr = pair
    out = str(tmp_path / "out.tif")
    code = main(["fuse", lr_path, msi_path, out, "--method", "bicubic", "--device", "cpu", "--tile-size", "12",
                 "--overlap", "2", "--no-shift-correction", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scale"] == 3 and report["method"] == "bicubic" and report["model"] == ""
    assert (report["grid"]["width"], report["grid"]["height"]) == (72, 72)
    assert report["tiles_total"] == 4 and report["shift"] == [0.0, 0.0] and not report["shift_corrected"]
    with rasterio.open(out) as ds:
        data = ds.read()
        assert ds.crs.to_epsg() == 32633 and ds.transform.almost_equals(LR_T * Affine.scale(1 / 3))
    assert np.isnan(data[:, :12, :12]).all()  # the LR nodata corner stays nodata
    np.testing.assert_allclose(data[:, 1::3, 1::3][:, 6:, 6:], lr[:, 6:, 6:], atol=1e-5)  # bicubic hits LR centres


def test_fuse_refuses_existing_output_without_overwrite(pair, tmp_path, capsys):
    lr_path, msi_path, _lr = pair
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep")
    assert main(["fuse", lr_path, msi_path, str(out), "--method", "bicubic", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep"


def test_fuse_refuses_output_equal_to_an_input(pair, capsys):
    lr_path, msi_path, _lr = pair
    before = os.path.getsize(msi_path)
    assert main(["fuse", lr_path, msi_path, msi_path, "--method", "bicubic", "--device", "cpu",
                 "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert os.path.getsize(msi_path) == before


@pytest.fixture
def no_compute(monkeypatch):
    """Make any read of the inputs fail, to prove the output is checked first."""
    import csakd_qgis.fusion.plan as plan

    def fail(*args, **kwargs):
        raise AssertionError("inputs were read before the output was checked")

    monkeypatch.setattr(plan, "read_info", fail)


def test_fuse_refuses_missing_folder_before_compute(pair, tmp_path, capsys, no_compute):
    from csakd_qgis.errors import RasterWriteError
    from csakd_qgis.fusion.engine import fuse

    lr_path, msi_path, _lr = pair
    missing = str(tmp_path / "no" / "such" / "out.tif")
    assert main(["fuse", lr_path, msi_path, missing, "--method", "bicubic", "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(RasterWriteError, match="does not exist"):
        fuse(lr_path, msi_path, missing, method="bicubic", device="cpu")


def test_fuse_refuses_unwritable_folder_before_compute(pair, tmp_path, capsys, no_compute, monkeypatch):
    lr_path, msi_path, _lr = pair
    folder = str(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == folder else real_access(path, mode))
    assert main(["fuse", lr_path, msi_path, str(tmp_path / "o.tif"), "--method", "bicubic", "--device", "cpu"]) == 2
    assert "not writable" in capsys.readouterr().err
