import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csakd_qgis.errors import TilingError
from csakd_qgis.fusion.tiling import plan_tiles, ramp, reflect_indices, reflect_pad

sizes = st.integers(1, 70)
plans = st.tuples(sizes, sizes, st.integers(1, 24), st.integers(0, 6), st.integers(0, 5), st.integers(1, 4),
                  st.sampled_from(["linear", "hann"]))


def _plan(args):
    width, height, tile, overlap, halo, scale, kind = args
    return plan_tiles(width, height, tile=tile, overlap=min(overlap, tile // 4), halo=halo, scale=scale,
                      ramp=kind)


@settings(max_examples=60, deadline=None)
@given(plans)
def test_weights_cover_every_output_pixel_and_sum_to_one(args):
    plan = _plan(args)
    total = np.zeros((plan.out_height, plan.out_width))
    count = np.zeros_like(total)
    for tile in plan:
        o = tile.out
        w = plan.weights(tile)
        assert w.shape == (o.height, o.width)
        assert (w > 0).all()
        total[o.row_off:o.row_off + o.height, o.col_off:o.col_off + o.width] += w
        count[o.row_off:o.row_off + o.height, o.col_off:o.col_off + o.width] += 1
    assert (count >= 1).all()
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(plans)
def test_cores_partition_and_read_windows_fit_the_padded_raster(args):
    plan = _plan(args)
    width, height, _tile, _ov, halo, scale, _kind = args
    owner = np.zeros((height, width), dtype=int)
    reads = set()
    for tile in plan:
        c = tile.core
        owner[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] += 1
        assert c.width <= plan.tile and c.height <= plan.tile
        r = tile.read
        reads.add((r.width, r.height))
        # the read window lies inside the raster padded by overlap + halo + 1 on each side
        pad = plan.overlap + halo + 1
        assert r.col_off >= -pad and r.row_off >= -pad
        assert r.col_off + r.width <= width + pad and r.row_off + r.height <= height + pad
        # the contributing window sits inside the read window and inside the raster
        w = tile.window
        assert r.col_off <= w.col_off and w.col_off + w.width <= r.col_off + r.width
        assert 0 <= w.col_off and w.col_off + w.width <= width
        rows, cols = tile.crop
        assert (rows.stop - rows.start, cols.stop - cols.start) == (tile.out.height, tile.out.width)
        assert rows.stop <= r.height * scale and cols.stop <= r.width * scale
    assert (owner == 1).all()
    assert len(reads) == 1  # every tile has the same read size, so tiles batch


def test_tile_count_rule_and_tiny_raster():
    plan = plan_tiles(100, 10, tile=32, overlap=4, halo=2, scale=3)
    assert plan.shape == (1, 4)  # ceil(10/32) = 1, ceil(100/32) = 4
    assert [b - a for a, b in plan.cols.cores] == [25, 25, 25, 25]
    plan = plan_tiles(3, 2, tile=64, overlap=8, scale=4)
    assert len(plan) == 1 and plan.read_shape == (2 + 16, 3 + 16)
    assert plan.weights(next(iter(plan))).min() == 1.0  # no ramp at raster edges
    # uneven split: 10 px in tiles of 4 -> 3 cores of 4, 3, 3 (larger first)
    assert [b - a for a, b in plan_tiles(10, 1, tile=4, overlap=1, scale=1).cols.cores] == [4, 3, 3]


def test_seam_weights_hand_worked():
    # two tiles of 4 LR px, overlap 1, scale 2: seam spans HR 6..10, linear ramp 1/8, 3/8, 5/8, 7/8
    plan = plan_tiles(8, 1, tile=4, overlap=1, scale=2, ramp="linear")
    first, second = plan.tile_at(0, 0), plan.tile_at(0, 1)
    assert (first.out.col_off, first.out.width) == (0, 10)
    assert (second.out.col_off, second.out.width) == (6, 10)
    np.testing.assert_allclose(plan.weights(first)[0], [1, 1, 1, 1, 1, 1, 7 / 8, 5 / 8, 3 / 8, 1 / 8])
    np.testing.assert_allclose(plan.weights(second)[0], [1 / 8, 3 / 8, 5 / 8, 7 / 8, 1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(ramp(2, "hann"), [np.sin(np.pi / 8) ** 2, np.sin(3 * np.pi / 8) ** 2])


def test_reflect_matches_numpy_symmetric():
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    for pads in (((1, 2), (3, 0)), ((5, 7), (9, 4)), ((0, 0), (0, 0))):
        np.testing.assert_array_equal(reflect_pad(a, pads), np.pad(a, ((0, 0),) + pads, mode="symmetric"))
    assert reflect_indices(-3, 5, 3).tolist() == [2, 1, 0, 0, 1, 2, 2, 1]
    assert reflect_indices(-2, 3, 1).tolist() == [0] * 5


def test_bad_sizes_raise_tiling_error():
    with pytest.raises(TilingError, match="at most 4"):
        plan_tiles(100, 100, tile=16, overlap=5, scale=2)
    with pytest.raises(TilingError):
        plan_tiles(0, 10, tile=16, scale=2)
    with pytest.raises(TilingError, match="ramp"):
        plan_tiles(10, 10, tile=16, overlap=2, scale=2, ramp="cosine")


def test_read_mirrored_hands_back_a_window_inside_as_read_and_mirrors_outside():
    from rasterio.windows import Window

    from csakd_qgis.fusion.tiling import read_mirrored
    raster = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    given = []

    def read(w):
        given.append(raster[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width].copy())
        return given[-1], np.ones(given[-1].shape[1:], bool)

    inside, _ = read_mirrored(read, Window(1, 1, 3, 2), 5, 4)
    assert inside is given[-1]
    outside, valid = read_mirrored(read, Window(-1, 2, 3, 3), 5, 4)
    rows, cols = reflect_indices(2, 5, 4), reflect_indices(-1, 2, 5)
    np.testing.assert_array_equal(outside, raster[:, rows][:, :, cols])
    assert valid.shape == (3, 3) and outside is not given[-1]
