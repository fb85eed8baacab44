import math

import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.windows import Window

from csakd_qgis.errors import GridError
from csakd_qgis.geo.grid import Grid, plan_grids
from csakd_qgis.io.bands import RasterInfo


def info(path, crs, transform, width, height):
    crs = None if crs is None else CRS.from_user_input(crs)
    return RasterInfo(path=path, width=width, height=height, count=1, crs=crs,
                      transform=transform, dtype="float32", nodata=None, bands=(), scales=(1.0,), offsets=(0.0,))


UTM33 = "EPSG:32633"


def test_grid_geometry():
    grid = Grid(CRS.from_epsg(32633), Affine(10, 0, 1000, 0, -10, 5000), 7, 5)
    assert grid.res == (10, 10)
    assert grid.bounds == (1000, 4950, 1070, 5000)
    assert grid.window_bounds(Window(2, 1, 3, 2)) == (1020, 4970, 1050, 4990)
    assert grid.window_transform(Window(2, 1, 3, 2)) == Affine(10, 0, 1020, 0, -10, 4990)
    coarse = grid.coarsen(3)
    assert (coarse.width, coarse.height) == (2, 1)
    assert coarse.transform == Affine(30, 0, 1000, 0, -30, 5000)
    with pytest.raises(GridError, match="rotated"):
        Grid(CRS.from_epsg(32633), Affine(10, 1, 0, 0, -10, 0), 3, 3)
    with pytest.raises(GridError, match="north-up"):
        Grid(CRS.from_epsg(32633), Affine(10, 0, 0, 0, 10, 0), 3, 3)


def test_same_crs_integer_ratio_snaps_to_msi_and_trims():
    lr = info("lr.tif", UTM33, Affine(30, 0, 366015, 0, -30, 5809965), 32, 32)
    msi = info("msi.tif", UTM33, Affine(10, 0, 366000, 0, -10, 5810000), 100, 100)
    plan = plan_grids(lr, msi)
    assert plan.scale == 3 and plan.notes == ()
    out = plan.output
    # overlap: x 366015..366975, y 5809005..5809965; snapped inward to MSI 10 m edges
    assert out.transform == Affine(10, 0, 366020, 0, -10, 5809960)
    # 366020..366970 = 95 px and 5809010..5809960 = 95 px -> 31 LR px -> trimmed to 93
    assert (out.width, out.height) == (93, 93)
    assert plan.lr.transform == Affine(30, 0, 366020, 0, -30, 5809960)
    assert (plan.lr.width, plan.lr.height) == (31, 31)


def test_non_integer_ratio_resamples_msi_and_snaps_to_lr():
    lr = info("lr.tif", UTM33, Affine(30, 0, 366000, 0, -30, 5810000), 20, 20)
    msi = info("msi.tif", UTM33, Affine(9, 0, 366000, 0, -9, 5810000), 66, 66)
    plan = plan_grids(lr, msi)
    assert plan.scale == 3
    assert plan.output.res == (10, 10)
    assert plan.output.transform.c == 366000 and plan.output.transform.f == 5810000
    # overlap is the MSI: 594 m -> 19 whole LR pixels of 30 m
    assert (plan.lr.width, plan.lr.height) == (19, 19) and plan.lr.res == (30, 30)
    assert any("3.333" in n and "HR-MSI resampled to 10" in n for n in plan.notes)
    # a model that supports only 2 and 4 picks 4 (|3.33-4| < |3.33-2|): 7.5 m output
    plan = plan_grids(lr, msi, model_scales=(2, 4))
    assert plan.scale == 4 and plan.output.res == (7.5, 7.5)


def test_different_projected_crs_works_in_msi_crs():
    lr = info("lr.tif", UTM33, Affine(30, 0, 366000, 0, -30, 5810000), 64, 64)
    # the LR footprint is about (4527012, 3259526, 4529060, 3261574) in EPSG:3035
    msi = info("msi.tif", "EPSG:3035", Affine(10, 0, 4526500, 0, -10, 3261000), 300, 300)
    plan = plan_grids(lr, msi)
    assert plan.output.crs == CRS.from_epsg(3035)
    assert plan.scale == 3
    assert any("LR-HSI reprojected from EPSG:32633 to EPSG:3035" in n for n in plan.notes)
    left, bottom, right, top = plan.output.bounds
    # origin on MSI pixel edges
    assert left == pytest.approx(4527020) and top == pytest.approx(3261000)
    assert right <= 4529060 and bottom >= 3259526
    # 4527020..4529060 = 2040 m = 68 LR px; 3259530..3261000 = 1470 m = 49 LR px
    assert (plan.lr.width, plan.lr.height) == (68, 49) and plan.output.width == 204


def test_geographic_lr_is_reprojected_to_projected_msi():
    lr = info("lr.tif", "EPSG:4326", Affine(0.0004, 0, 13.0, 0, -0.0004, 52.5), 60, 60)
    msi = info("msi.tif", UTM33, Affine(10, 0, 363000, 0, -10, 5818000), 200, 200)
    plan = plan_grids(lr, msi)
    assert plan.output.crs == CRS.from_epsg(32633)
    # 0.0004 deg lat ~ 44.5 m, lon ~ 27 m at 52.5 N: mean near 35 m -> scale 3 or 4, never 1
    assert plan.scale in (3, 4)
    assert any("EPSG:4326" in n for n in plan.notes)


def test_both_geographic_uses_utm_of_overlap_centre():
    lr = info("lr.tif", "EPSG:4326", Affine(0.0009, 0, 13.0, 0, -0.0009, 52.5), 40, 40)
    msi = info("msi.tif", "EPSG:4326", Affine(0.0003, 0, 13.0, 0, -0.0003, 52.5), 120, 120)
    plan = plan_grids(lr, msi)
    assert plan.output.crs == CRS.from_epsg(32633)
    assert plan.scale == 3
    assert any("UTM" in n for n in plan.notes)


def test_refusals():
    good = info("msi.tif", UTM33, Affine(10, 0, 366000, 0, -10, 5810000), 100, 100)
    with pytest.raises(GridError, match="lr.tif.*no coordinate reference system.*gdal_edit.py -a_srs"):
        plan_grids(info("lr.tif", None, Affine(30, 0, 0, 0, -30, 0), 10, 10), good)
    far = info("lr.tif", UTM33, Affine(30, 0, 400000, 0, -30, 5810000), 10, 10)
    with pytest.raises(GridError, match=r"do not overlap.*\(400000, 5.8097e\+06, 400300, 5.81e\+06\)"):
        plan_grids(far, good)
    with pytest.raises(GridError, match="swap"):
        plan_grids(info("lr.tif", UTM33, Affine(5, 0, 366000, 0, -5, 5810000), 100, 100), good)
    corner = info("lr.tif", UTM33, Affine(30, 0, 366000 + 960, 0, -30, 5810000), 10, 10)
    with pytest.raises(GridError, match="1 x 10 LR pixels"):
        plan_grids(corner, good)
    lr = info("lr.tif", UTM33, Affine(30, 0, 366000, 0, -30, 5810000), 10, 10)
    with pytest.raises(GridError, match="not supported by the model"):
        plan_grids(lr, good, scale=3, model_scales=(2, 4))


@settings(max_examples=60, deadline=None)
@given(
    msi_res=st.sampled_from([1.0, 2.5, 5.0, 10.0, 20.0]),
    scale=st.integers(2, 8),
    lr_size=st.tuples(st.integers(2, 30), st.integers(2, 30)),
    msi_offset=st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000)),
    lr_origin=st.tuples(st.floats(-1e5, 1e5), st.floats(-1e5, 1e5)),
)
def test_lr_grid_is_exactly_scale_times_output(msi_res, scale, lr_size, msi_offset, lr_origin):
    lr_res = msi_res * scale
    lr = info("lr.tif", UTM33, Affine(lr_res, 0, 500000 + lr_origin[0], 0, -lr_res, 5e6 + lr_origin[1]),
              lr_size[0] + 2, lr_size[1] + 2)
    cols = math.ceil(lr_res * (lr_size[0] + 2) / msi_res) + 2 * scale
    rows = math.ceil(lr_res * (lr_size[1] + 2) / msi_res) + 2 * scale
    msi = info("msi.tif", UTM33, Affine(msi_res, 0, lr.transform.c - lr_res + msi_offset[0] % msi_res, 0,
                                        -msi_res, lr.transform.f + lr_res - msi_offset[1] % msi_res),
               cols, rows)
    plan = plan_grids(lr, msi)
    out, low = plan.output, plan.lr
    assert plan.scale == scale
    assert low.transform.a == out.transform.a * scale and low.transform.e == out.transform.e * scale
    assert (low.transform.c, low.transform.f) == (out.transform.c, out.transform.f)
    assert low.width * scale == out.width and low.height * scale == out.height
    # output pixels are MSI pixels and lie inside both footprints
    assert ((out.transform.c - msi.transform.c) / msi_res) == pytest.approx(
        round((out.transform.c - msi.transform.c) / msi_res), abs=1e-6)
    left, bottom, right, top = out.bounds
    l0, b0, r0, t0 = lr.bounds
    tol = 1e-5 * msi_res  # the snapping tolerance
    assert left >= l0 - tol and right <= r0 + tol and bottom >= b0 - tol and top <= t0 + tol
    # nothing lost beyond one LR pixel (plus the snap to MSI edges) on each side
    assert right - left > (r0 - l0) - 2 * lr_res - 2 * msi_res - 1e-6
