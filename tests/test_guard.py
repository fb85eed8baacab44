"""The output guard: a fused image is checked against its own inputs, and a misread input is refused."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from csakd_qgis.errors import ImplausibleOutputError
from csakd_qgis.estimation import relabelled_bands
from csakd_qgis.fusion.engine import fuse
from csakd_qgis.quality.guard import _out_of_range, _relative_error, _verdict

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample"


def test_relative_error_is_rmse_over_the_band_std():
    rng = np.random.default_rng(0)
    observed = rng.normal(size=(2, 10, 10))
    predicted = observed + 0.5 * observed.std(axis=(1, 2), keepdims=True)  # RMSE = 0.5 std in each band
    predicted[1, 0, 0] = np.nan  # left out
    assert _relative_error(predicted, observed, np.array([True, True])) == pytest.approx(0.5, rel=0.02)


def test_out_of_range_counts_values_beyond_one_range_of_the_lr_hsi():
    lr = np.linspace(0.0, 1.0, 1000).reshape(1, 10, 100)
    out = np.full((1, 10, 10), 0.5)
    out[0, 0, :3] = [2.5, -1.5, 1.9]  # beyond 1 range above / below; 1.9 is inside the slack
    assert _out_of_range(out, lr, np.array([True])) == pytest.approx(2 / 100)


def test_verdict_names_the_likely_cause():
    assert _verdict(0.03, 0.02, 0.02, 0.0).passed
    assert _verdict(0.05, 0.2, 0.02, 0.0).passed  # 10x the inputs' error but below their error + margin
    offset = _verdict(0.05, 0.7, 0.03, 0.0)
    assert not offset.passed and "another order or from another sensor" in offset.message
    units = _verdict(0.9, 0.9, 0.03, 0.2)
    assert not units.passed and "20.0 % of its values" in units.message and "misregistration" in units.message


def _sample_msi(tmp_path, offset, order=(0, 1, 2, 3)):
    """The sample's HR-MSI as a reader that forgot an offset would see it: every value ``offset`` too high.

    ``order``: the stored bands' data in this order, their labels (wavelengths) left as they were.
    """
    with rasterio.open(SAMPLE / "s2_hr_msi.tif") as ds:
        profile, data, tags = ds.profile, ds.read(), [ds.tags(i) for i in ds.indexes]
    path = tmp_path / "msi.tif"
    with rasterio.open(path, "w", **profile) as out:
        out.write(data[list(order)])
        out.scales, out.offsets = (1e-4,) * 4, (offset,) * 4
        for i, t in enumerate(tags, start=1):
            out.update_tags(i, **t)
    return str(path)


def test_the_bundled_pair_passes(tmp_path):
    report = fuse(str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif"), str(tmp_path / "o.tif"),
                  method="gsa", device="cpu")
    assert report.guard["passed"] and report.guard["lr_error"] < 0.1 and report.guard["msi_error"] < 0.1
    assert any(n.startswith("output guard: passed") for n in report.notes)


def test_an_msi_read_with_an_offset_too_many_is_refused_for_a_network(tmp_path):
    """0.1 reflectance too high (what an ignored Sentinel-2 BOA_ADD_OFFSET gives): the student's output is junk."""
    lr, msi = str(SAMPLE / "enmap_lr_hsi.tif"), _sample_msi(tmp_path, 0.1)
    with pytest.raises(ImplausibleOutputError, match="their offset differs") as error:
        fuse(lr, msi, str(tmp_path / "o.tif"), method="csakd", device="cpu")
    assert "--no-guard" in str(error.value) and not (tmp_path / "o.tif").exists()
    kept = fuse(lr, msi, str(tmp_path / "o.tif"), method="csakd", device="cpu", guard=False)
    assert kept.guard == {} and (tmp_path / "o.tif").exists()
    # the classical floor fits its coefficients (intercepts included) to the pair: its output stays consistent
    assert fuse(lr, msi, str(tmp_path / "g.tif"), method="gsa", device="cpu").guard["passed"]


def test_relabelled_bands_finds_a_swap_and_keeps_noisy_but_right_labels():
    nominal = [492.0, 560.0, 665.0, 833.0]
    assert relabelled_bands([666.0, 561.0, 493.0, 835.0], nominal) == (2, 1, 0, 3)
    assert relabelled_bands([555.0, 495.0, 668.0, 830.0], nominal) == (1, 0, 2, 3)
    assert relabelled_bands([493.0, 560.0, 666.0, 833.0], nominal) is None
    # Indian Pines at 35 dB: two centroids far off, yet no other labelling fits clearly better
    assert relabelled_bands([546.0, 677.0, 674.0, 840.0], nominal) is None
    assert relabelled_bands([600.0, 600.0], [560.0, 640.0]) is None
    assert relabelled_bands([float("nan"), 600.0], [560.0, 640.0]) is None


def test_msi_bands_stored_in_another_order_than_labelled_are_refused_for_a_network(tmp_path):
    """B4, B3, B2, B8 stored under the labels B2, B3, B4, B8: the estimated responses give the swap away."""
    lr, msi = str(SAMPLE / "enmap_lr_hsi.tif"), _sample_msi(tmp_path, 0.0, order=(2, 1, 0, 3))
    with pytest.raises(ImplausibleOutputError, match="band 1 is labelled 492 nm but responds like 665 nm"):
        fuse(lr, msi, str(tmp_path / "o.tif"), method="csakd", device="cpu")
    assert not (tmp_path / "o.tif").exists()
    report = fuse(lr, msi, str(tmp_path / "g.tif"), method="gsa", device="cpu")
    assert any("another order" in n and "not affected" in n for n in report.notes) and report.guard["passed"]
    kept = fuse(lr, msi, str(tmp_path / "o.tif"), method="csakd", device="cpu", guard=False)
    assert any("a network reads the wrong bands" in n for n in kept.notes)
    right = fuse(lr, str(SAMPLE / "s2_hr_msi.tif"), str(tmp_path / "r.tif"), method="gsa", device="cpu")
    assert not any("another order" in n for n in right.notes)
