"""The reader -> compute -> blender/writer pipeline on in-memory pairs (csakd_qgis/fusion/pipeline.py, blend.py)."""

import threading
import time
from contextlib import nullcontext

import numpy as np
import pytest
from pipeline_fakes import ArraySource, RecordingSink
from rasterio.windows import Window

from csakd_qgis.errors import Cancelled, TilingError
from csakd_qgis.fusion.methods import BicubicMethod
from csakd_qgis.fusion.pipeline import _covered, run_pipeline
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.tiling import plan_tiles
from csakd_qgis.progress import Reporter

S = 3


@pytest.fixture
def pair():
    """48 x 48 LR (5 bands) and 144 x 144 MSI (3 bands) arrays, scale 3."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    lr = np.stack([0.2 + 0.1 * k + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) for k in range(5)])
    lr = (lr + 0.01 * rng.random(lr.shape)).astype(np.float32)
    msi = (0.3 + 0.2 * rng.random((3, 144, 144))).astype(np.float32)
    return None, None, lr, msi


def _levels(bands=5, empty=()):
    return Radiometry(1.0, 1.0, np.zeros(bands, np.float32), np.zeros(3, np.float32), tuple(empty))


class Constant:
    """A method predicting ``value`` everywhere: blending must give back exactly ``value`` (weights sum to 1)."""

    name, halo = "constant", 0

    def __init__(self, value, scale=S):
        self.value, self.scale = value, scale

    def predict(self, lr, msi):
        return np.full((lr.shape[0], lr.shape[1], msi.shape[2], msi.shape[3]), self.value, np.float32)


def test_column_blocks_are_aligned_and_list_every_reaching_tile():
    from csakd_qgis.fusion.blend import ColumnBlocks, schedule
    plan = plan_tiles(48, 48, tile=10, overlap=2, scale=S)  # HR tile windows 0-36, 24-66, 54-96, 84-123, 111-144
    blocks = ColumnBlocks.build(plan, block_width=64, out_block=32)
    assert blocks.spans == ((0, 64), (64, 128), (128, 144))
    assert blocks.columns == ((0, 1, 2), (1, 2, 3, 4), (4,))
    assert blocks.owner == (0, 0, 0, 1, 1)
    assert ColumnBlocks.build(plan, block_width=100, out_block=32).spans == ((0, 96), (96, 144))
    assert ColumnBlocks.build(plan, block_width=10, out_block=32).spans[:2] == ((0, 32), (32, 64))
    order = [(t.row, t.col, b) for t, b in schedule(plan, blocks)]
    assert len(order) == 5 * 8 and order[:4] == [(0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 0, 0)]


def test_pipeline_writes_each_block_aligned_strip_once(pair):
    from csakd_qgis.fusion.tiling import reflect_pad
    _p, _q, lr, msi = pair
    plan = plan_tiles(48, 48, tile=10, overlap=2, halo=2, scale=S)
    sink = RecordingSink((5, 144, 144))
    radiometry = Radiometry(1.0, 1.0, np.zeros(5, np.float32), np.zeros(3, np.float32))
    result = run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), BicubicMethod(S), plan, sink, radiometry,
                          batch_size=3, block_width=64, out_block=32)
    assert (result.tiles, result.recomputed, result.carried) == (25, 0, 15)
    # 3 column blocks x 5 strips (4 of 32 rows, one of 16), each written once as a whole window
    expected = {(x0, y, x1 - x0, min(32, 144 - y)) for x0, x1 in ((0, 64), (64, 128), (128, 144))
                for y in range(0, 144, 32)}
    got = sink.windows
    assert len(got) == 15 and set(got) == expected
    # whole image upsampled at once, with the same 2-px mirrored context at the edges
    whole = BicubicMethod(S).predict(reflect_pad(lr, ((2, 2), (2, 2)))[None], None)[0, :, 6:-6, 6:-6]
    np.testing.assert_allclose(sink.out, whole, rtol=0, atol=2e-6)


class CountingSource(ArraySource):
    """An :class:`ArraySource` that counts reads and leaves the MSI invalid in ``hole`` (HR rows, cols)."""

    def __init__(self, lr, msi, hole=None):
        super().__init__(lr, msi)
        self.lr_reads, self.msi_reads, self.hole = 0, 0, hole

    def read_lr(self, window):
        self.lr_reads += 1
        return super().read_lr(window)

    def read_msi(self, window):
        self.msi_reads += 1
        part, valid = super().read_msi(window)
        if self.hole is not None:
            mask = np.zeros(self.msi.shape[1:], bool)
            mask[self.hole] = True
            valid = valid & ~mask[window.row_off:window.row_off + window.height,
                                  window.col_off:window.col_off + window.width]
        return part, valid


class Scaled:
    """Each output pixel from its own tile's inputs: any tile predicted twice would give the same values."""

    name, halo = "scaled", 1

    def __init__(self, scale=S):
        self.scale = scale

    def predict(self, lr, msi):
        up = np.repeat(np.repeat(lr, self.scale, axis=2), self.scale, axis=3)
        return (up.mean(axis=1, keepdims=True) * msi[:, :1] + up).astype(np.float32)


@pytest.mark.parametrize("tile, overlap, block_width", [(10, 2, 64), (7, 1, 32), (30, 3, 32), (48, 0, 64)])
def test_the_seam_carry_gives_the_recomputed_output_without_predicting_twice(pair, tile, overlap, block_width):
    """Tiles reaching 2 or (tile 30: 90 HR px, 32-px blocks) 4 blocks, and a hole of invalid MSI pixels."""
    _p, _q, lr, msi = pair
    plan = plan_tiles(48, 48, tile=tile, overlap=overlap, halo=1, scale=S)
    outs, results, reads, strips = [], [], [], []
    for carry in (False, True):
        source = CountingSource(lr, msi, hole=(slice(0, 144), slice(50, 100)))
        sink = RecordingSink((5, 144, 144))
        results.append(run_pipeline(lambda s=source: nullcontext(s), Scaled(), plan, sink, _levels(),
                                    batch_size=2, block_width=block_width, out_block=32, carry=carry))
        outs.append(sink.out)
        reads.append(source.msi_reads)
        strips.append(source.lr_reads)
    recomputing, carrying = results
    assert carrying.recomputed == 0 and carrying.carried == recomputing.recomputed > 0
    assert reads == [len(plan) + recomputing.recomputed, len(plan)]  # a carried tile is not read again
    # the LR-HSI is read at most once per tile row and column block
    assert strips[1] <= strips[0] <= len(plan.rows.cores) * -(-144 // block_width)
    assert carrying.skipped == recomputing.skipped and carrying.skipped_tiles == recomputing.skipped_tiles
    np.testing.assert_array_equal(outs[1], outs[0])
    assert np.isnan(outs[1][:, :, 50:100]).all() and not np.isnan(outs[1][:, :, :50]).any()


def test_a_full_disk_under_the_seam_carry_says_so(tmp_path):
    import errno

    from csakd_qgis.errors import RasterWriteError
    from csakd_qgis.fusion.blend import SeamCarry

    class FullDisk:
        def seek(self, *args):
            return 0

        def truncate(self):
            return 0

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    carry = SeamCarry(str(tmp_path))
    carry.files[1].close()
    carry.files[1] = FullDisk()
    tile = plan_tiles(48, 48, tile=10, overlap=2, scale=S).tile_at(0, 1)
    with pytest.raises(RasterWriteError, match="the disk is full"):
        carry.put(tile, 1, np.zeros((5, 4, 4), np.float32), 5)
    carry.put(tile, 2, None, 5)  # the other file still works; a tile without valid pixels stores nothing
    assert carry.take(tile) == (None, 5)
    carry.close()


@pytest.mark.parametrize("tile, overlap", [(10, 2), (7, 1), (16, 4), (48, 0)])
def test_blend_weights_sum_to_one_everywhere(pair, tile, overlap):
    _p, _q, lr, msi = pair
    sink = RecordingSink((5, 144, 144))
    plan = plan_tiles(48, 48, tile=tile, overlap=overlap, scale=S)
    run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), Constant(0.7), plan, sink, _levels(),
                 block_width=64, out_block=32)
    np.testing.assert_allclose(sink.out, 0.7, rtol=0, atol=1e-6)


def test_empty_bands_are_written_as_nodata(pair):
    _p, _q, lr, msi = pair
    sink = RecordingSink((5, 144, 144))
    plan = plan_tiles(48, 48, tile=16, overlap=4, scale=S)
    run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), Constant(0.5), plan, sink, _levels(empty=(1, 3)))
    assert np.isnan(sink.out[[1, 3]]).all()
    np.testing.assert_allclose(sink.out[[0, 2, 4]], 0.5, rtol=0, atol=1e-6)


def test_a_region_equals_the_same_pixels_of_the_whole_output(pair):
    _p, _q, lr, msi = pair
    plan = plan_tiles(48, 48, tile=10, overlap=2, halo=2, scale=S)
    whole, part = RecordingSink((5, 144, 144)), RecordingSink((5, 50, 70))
    run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), BicubicMethod(S), plan, whole, _levels())
    run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), BicubicMethod(S), plan, part, _levels(),
                 region=Window(40, 30, 70, 50))
    np.testing.assert_array_equal(part.out, whole.out[:, 30:80, 40:110])
    with pytest.raises(TilingError):
        run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), BicubicMethod(S), plan, part, _levels(),
                     region=Window(100, 100, 70, 50))


def test_cancel_stops_before_writing_everything(pair):
    _p, _q, lr, msi = pair
    sink = RecordingSink((5, 144, 144))
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), BicubicMethod(S),
                     plan_tiles(48, 48, tile=8, overlap=2, scale=S), sink, _levels(), batch_size=1,
                     reporter=Reporter(is_cancelled=cancelled))
    assert np.isnan(sink.out).any()


class Jittery(Scaled):
    """:class:`Scaled` that sleeps a random while per call, so concurrent calls finish out of order; counts them."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.rng, self.lock = np.random.default_rng(5), threading.Lock()
        self.running = self.most = self.calls = 0
        self.fail_at = fail_at

    def predict(self, lr, msi):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            pause, call = self.rng.uniform(0.0, 0.02), self.calls
        try:
            time.sleep(pause)
            if call == self.fail_at:
                raise ValueError("broken tile")
            return super().predict(lr, msi)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("batch_size, streams", [(1, 2), (2, 3)])
def test_concurrent_batches_give_the_serial_output(pair, batch_size, streams):
    _p, _q, lr, msi = pair
    plan = plan_tiles(48, 48, tile=7, overlap=1, halo=1, scale=S)
    hole = (slice(0, 144), slice(50, 100))
    outs, results, methods = [], [], []
    for n in (1, streams):
        sink, method = RecordingSink((5, 144, 144)), Jittery()
        results.append(run_pipeline(lambda: nullcontext(CountingSource(lr, msi, hole=hole)), method, plan, sink,
                                    _levels(), batch_size=batch_size, block_width=32, out_block=32, streams=n))
        outs.append(sink.out)
        methods.append(method)
    serial, concurrent = results
    assert (serial.streams, concurrent.streams) == (1, streams)
    assert methods[0].most == 1 and methods[1].most == streams  # predicted at once, finished out of order
    assert concurrent.skipped_tiles == serial.skipped_tiles and concurrent.carried == serial.carried
    assert 0 < concurrent.timings.infer
    np.testing.assert_array_equal(outs[1], outs[0])


def test_an_error_or_a_cancel_in_concurrent_batches_ends_the_run(pair):
    _p, _q, lr, msi = pair
    plan = plan_tiles(48, 48, tile=8, overlap=2, scale=S)
    with pytest.raises(ValueError, match="broken tile"):
        run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), Jittery(fail_at=4), plan,
                     RecordingSink((5, 144, 144)), _levels(), batch_size=1, streams=2)
    calls = []
    sink = RecordingSink((5, 144, 144))
    with pytest.raises(Cancelled):
        run_pipeline(lambda: nullcontext(ArraySource(lr, msi)), Jittery(), plan, sink, _levels(), batch_size=1,
                     streams=2, reporter=Reporter(is_cancelled=lambda: calls.append(1) or len(calls) > 2))
    assert np.isnan(sink.out).any()


def test_covered_time_counts_overlapping_spans_once():
    assert _covered([]) == 0.0
    assert _covered([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7)]) == pytest.approx(4.0)


def test_tiles_are_filled_where_invalid_or_not_finite_and_divided_by_the_level_in_place():
    from csakd_qgis.fusion.reader import _normalised
    data = np.full((2, 2, 3), 4.0, np.float32)
    data[0, 0, 0], data[1, 1, 2] = np.nan, np.inf
    valid = np.ones((2, 3), bool)
    valid[1, 0] = False  # finite values the source marked invalid are filled too
    out = _normalised(data, valid, np.array([1.0, 3.0]), 2.0)
    expected = np.full((2, 2, 3), 2.0, np.float32)
    expected[0, 0, 0], expected[1, 1, 2], expected[:, 1, 0] = 0.5, 1.5, [0.5, 1.5]
    assert out is data and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_a_tile_output_is_its_prediction_scaled_in_place():
    """No copy per tile: at 224 bands a copy is a fresh 30-60 MB buffer, whose page faults cost the compute threads."""
    from csakd_qgis.fusion.pipeline import _to_output

    plan = plan_tiles(40, 40, tile=16, overlap=4, halo=2, scale=3)
    tile = next(iter(plan))
    rng = np.random.default_rng(5)
    prediction = rng.random((4, 3 * tile.read.height, 3 * tile.read.width), dtype=np.float32)
    before = prediction.copy()
    valid = np.ones((tile.out.height, tile.out.width), bool)
    valid[0, :3] = False
    out = _to_output(prediction, tile, valid, Radiometry(2.5, 1.0, np.zeros(4, np.float32),
                                                         np.zeros(3, np.float32), (1,)))
    rows, cols = tile.crop
    assert np.shares_memory(out, prediction)
    expected = before[:, rows, cols] * np.float32(2.5)
    expected[:, ~valid] = np.nan
    expected[1] = np.nan
    np.testing.assert_array_equal(out, expected)
