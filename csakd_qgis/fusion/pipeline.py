"""The tiled reader -> compute -> blender/writer pipeline.

Three stages overlap in time:

1. a **reader thread** opens its own input pair (GDAL datasets are not
   thread-safe, so the pair is made by a factory called in that thread),
   reads each tile's LR window (halo included, mirrored at raster edges;
   cut from one read per tile row of a column block,
   :func:`~csakd_qgis.fusion.reader.read_tiles`)
   and the matching HR-MSI window, fills invalid pixels with the scene's
   per-band fill values, divides by the robust levels and queues the tile
   (bounded queue, so reading never runs far ahead);
2. the **compute loop** on the calling thread stacks tiles into batches and
   has each batch predicted (``method.predict``, halving the batch on
   out-of-memory errors, see :class:`~csakd_qgis.devices.OomBackoff`),
   multiplied back by the LR level, cropped to the tile and set to NaN
   where invalid; with ``streams`` > 1, that many batches are predicted at
   once by compute threads and handed on in the reader's order;
3. a **writer thread** blends and writes: every output pixel lies in one cell
   of the tile plan (:mod:`csakd_qgis.fusion.tiling`); cells covered by one tile are
   final at once, seam cells are accumulated (weight x prediction) until all
   their tiles have arrived.  Final cells are encoded to the output dtype
   (``sink.encode``) straight into *strips*: windows of ``out_block`` output
   rows across one column block, aligned to the output's blocks.  A strip is
   written (``sink.write_stored``) when its last pixel has arrived, so GDAL
   only ever receives whole blocks (plus the raster's right and bottom edge
   blocks, whole as far as the raster goes) and never compresses a block
   twice.

Memory does not grow with the raster: the output is cut into *column
blocks* of ``block_width`` HR pixels (a multiple of ``out_block``; the last
one narrower), processed one after the other, row-major inside a block.  A
block blends every tile whose output window reaches into it and keeps only
the part inside it.  The one or two tile columns that straddle a block
boundary are predicted once: the block that predicts them writes the part
the next block needs to a spill file on disk
(:class:`~csakd_qgis.fusion.blend.SeamCarry`, ``carried``), and the next
block reads it back instead of reading and predicting the tile again
(``carry=False``: predicted again, ``recomputed``; about
``tile x scale / block_width`` extra work).  At any time the writer holds
the seams below the current tile row of one block
(``block_width x 2 overlap x scale x bands`` float32) and the open strips
(those the current tile row reaches: ``out_block`` + one tile window of
rows x ``block_width x bands`` in the output dtype), plus the queues
(``2 x batch_size`` tiles each way) and the ``streams`` batches being
predicted; the reader holds one LR row strip
(tile read rows x (``block_width / scale`` + 2 tile reads) x bands,
float32).  None of it depends on the raster size.

Regions
-------
``run_pipeline(region=...)`` fuses one rectangle of the output (HR pixels)
with the *global* tile plan: it visits every tile whose output window
reaches into the region, blends only the region's pixels and writes them to
a sink of the region's size (windows relative to its top-left corner).
Every output pixel is then the same weighted sum of the same tiles as in a
whole-output run, so regions fused apart and put side by side equal the
whole output; tiles on a region border are predicted by each region they
reach (:mod:`csakd_qgis.distributed`).  Column blocks and strips start at
the region's corner.

A tile whose output window has no valid pixel is not predicted (counted as
skipped once, in the first block that visits it).  Output pixels are NaN
(nodata) where the MSI pixel or the LR-HSI pixel covering it is invalid.
Cancellation is checked once per batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, ContextManager, Deque, List, Optional, Sequence, Tuple, Union

import numpy as np
from rasterio.windows import Window

from csakd_qgis.devices import OomBackoff
from csakd_qgis.errors import TilingError
from csakd_qgis.fusion.blend import CARRIED, Blender, ColumnBlocks, SeamCarry, Sink, Timings, schedule
from csakd_qgis.fusion.methods import FusionMethod
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.reader import PairSource, read_tiles
from csakd_qgis.fusion.tiling import Tile, TilePlan
from csakd_qgis.options import BLOCK_WIDTH, OUTPUT_BLOCK
from csakd_qgis.progress import SILENT, Reporter


@dataclass(frozen=True)
class PipelineResult:
    """Counts and timings of one pipeline run.

    ``tiles`` counts the distinct tiles that reach the run's region (all of
    the plan for the whole output), ``recomputed`` the extra predictions of
    tiles that straddle column blocks (none with a seam carry),
    ``carried`` the visits served from the seam carry instead,
    ``skipped_tiles`` the ``(row, col)`` of tiles with no valid output
    pixel (not predicted), ``streams`` the batches predicted at once.
    ``timings.infer`` is the time during which at least one batch was
    being predicted.
    """

    tiles: int
    skipped: int
    recomputed: int
    batch_size: int
    timings: Timings
    skipped_tiles: Tuple[Tuple[int, int], ...] = ()
    carried: int = 0
    streams: int = 1


_DONE = object()


def _heap_trimmer() -> Callable[[], None]:
    """``malloc_trim(0)`` of the C library when it is glibc's, else a no-op.

    Tiles are allocated by the reader thread and freed by the compute and
    writer threads; glibc keeps such freed memory in its arenas instead of
    returning it, so the resident size crept up with the number of tiles a
    run had processed (1008 x 8064 output px, 60 bands, GSA: 1008 MB peak
    against 880 MB at 1008 x 1008).  Trimming after every batch gave 921 MB
    at the same speed then; since the heap trimmed is faulted in again by the
    next tiles, the pipeline trims once per :data:`TRIM_EVERY` tiles (0.11:
    less than half the page faults of trimming every tile, 4 % faster with
    the default method and up to 19 % with GSA on one thread, for ~30 MB
    more at the peak and the same growth with the run's length;
    ``bench/heap_trim.py``).  Other C libraries (macOS, Windows, musl)
    return freed memory on their own terms and are left alone.
    """
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def run() -> None:
        trim(0)

    return run


#: See :func:`_heap_trimmer`.
_trim_heap = _heap_trimmer()
#: Tiles computed between two heap trims (at the first batch that reaches each multiple).
TRIM_EVERY = 8


class _Stage(threading.Thread):
    """A daemon thread that records the exception that ended it."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set; False when the pipeline is stopping."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _to_output(prediction: np.ndarray, tile: Tile, valid: np.ndarray, radiometry: Radiometry) -> np.ndarray:
    """One tile's prediction ``(C, h s, w s)`` (normalised, halo included) as the output gets it.

    Cropped to the tile's output window, in physical units, NaN where
    ``valid`` is False and in the bands without data.  The result is a view
    of ``prediction``, scaled in place: a copy would be a fresh 30-60 MB
    buffer per tile at 224 bands, and faulting its pages in cost the compute
    threads 4-5 times the scaling itself (``docs/pipeline.md``).
    """
    rows, cols = tile.crop
    out = prediction[:, rows, cols]
    out *= np.float32(radiometry.lr_level)
    out[:, ~valid] = np.nan
    out[list(radiometry.empty_bands)] = np.nan
    return out


def _covered(spans: Sequence[Tuple[float, float]]) -> float:
    """Seconds covered by at least one of the ``(start, end)`` spans (their union's length)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def run_pipeline(open_source: Callable[[], ContextManager[PairSource]], method: FusionMethod, plan: TilePlan,
                 sink: Sink, radiometry: Radiometry,
                 *, batch_size: int = 4, block_width: int = BLOCK_WIDTH, out_block: int = OUTPUT_BLOCK,
                 region: Optional[Window] = None, reporter: Reporter = SILENT,
                 notify: Optional[Callable[[str], None]] = None, carry_dir: Optional[str] = None,
                 carry: bool = True, streams: int = 1) -> PipelineResult:
    """Fuse the tiles of ``plan`` and write the blended output (or one region of it) to ``sink``.

    Parameters
    ----------
    open_source:
        Called once in the reader thread; returns a context manager giving
        the input pair that thread reads (and closes) alone.
    method:
        The fusion method; it gets the context of the plan's ``halo`` around each tile.
    plan:
        Tile plan of the LR raster.
    sink:
        Output writer, HR windows in physical units, relative to the
        region's top-left corner.
    radiometry:
        Levels and fill values measured on the whole scene.
    batch_size:
        Tiles per ``method.predict`` call (halved on out-of-memory errors).
    block_width:
        Output pixels per column block (see the module docstring).
    out_block:
        Side of the sink's blocks in HR pixels; strips and column blocks are
        aligned to it.
    region:
        HR window of the output to produce (default: all of it); the sink
        has its size (module docstring, "Regions").
    reporter:
        Progress per batch (fraction of tiles done) and cancellation.
    notify:
        Receives out-of-memory messages.
    carry:
        Keep the part of a tile straddling a column-block boundary that the
        next block needs in spill files (:class:`~csakd_qgis.fusion.blend.SeamCarry`)
        instead of predicting the tile again there.  Outputs are the same.
    carry_dir:
        Folder of the spill files (the output's folder); None: the system's temporary folder.
    streams:
        Batches predicted at once, each by a compute thread of its own
        (``method.predict`` must allow concurrent calls; see
        :func:`~csakd_qgis.devices.compute_streams`).  Outputs are the same.

    Raises
    ------
    TilingError
        When ``region`` is empty or leaves the output.
    Cancelled
        When the reporter says so (checked once per batch).
    TileTooLarge
        When one tile does not fit in the device memory.
    """
    region = region or Window(0, 0, plan.out_width, plan.out_height)
    x0, y0 = int(region.col_off), int(region.row_off)
    x1, y1 = x0 + int(region.width), y0 + int(region.height)
    if not (0 <= x0 < x1 <= plan.out_width and 0 <= y0 < y1 <= plan.out_height):
        raise TilingError(f"region {region} is empty or leaves the {plan.out_width} x {plan.out_height} output")
    blocks = ColumnBlocks.build(plan, block_width, out_block, span=(x0, x1))
    order = [(tile, block, carry and blocks.visited_before(tile.col, block))
             for tile, block in schedule(plan, blocks, rows=(y0, y1))]
    stop = threading.Event()
    to_compute: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    to_write: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    timings = Timings()

    def read_all() -> None:
        with open_source() as source:
            items = read_tiles(source, plan, order, radiometry)
            while True:
                start = time.perf_counter()
                item = next(items, None)
                timings.read += time.perf_counter() - start
                if item is None:
                    break
                if not _put(to_compute, item, stop):
                    return
        _put(to_compute, _DONE, stop)

    seams = SeamCarry(carry_dir) if carry else None
    blender = Blender(plan, sink, blocks, out_block, region, seams)

    def write_all() -> None:
        while not stop.is_set():
            try:
                item = to_write.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            blender.add(*item)

    reader = _Stage(read_all, "csakd-reader")
    writer = _Stage(write_all, "csakd-writer")
    backoff = OomBackoff(batch_size, notify)
    skipped: List[Tuple[int, int]] = []
    done = 0
    total = len(order)

    def check_threads() -> None:
        for stage in (reader, writer):
            if stage.error is not None:
                raise stage.error

    busy: List[Tuple[float, float]] = []  # (start, end) of each predict call

    def predict(batch: list) -> List[Union[np.ndarray, None, object]]:
        """What the writer gets for each tile of ``batch``: its output, None (no valid pixel) or CARRIED."""
        active = [item for item in batch if item[4] is not None and item[4].any()]
        preds = iter(())
        if active:
            start = time.perf_counter()
            preds = iter(backoff.run(method.predict, np.stack([a[2] for a in active]),
                                     np.stack([a[3] for a in active])))
            busy.append((start, time.perf_counter()))
        return [CARRIED if valid is None else _to_output(next(preds), tile, valid, radiometry) if valid.any()
                else None for tile, _block, _lr, _msi, valid in batch]

    def emit(batch: list, outputs: List[Union[np.ndarray, None, object]]) -> None:
        """Hand ``batch``'s outputs to the writer, in order; count, trim and report."""
        nonlocal done
        for (tile, block, lr, _msi, valid), pred in zip(batch, outputs):
            bands = 0 if valid is None else lr.shape[0]
            if pred is None and blocks.owner[tile.col] == block:
                skipped.append((tile.row, tile.col))
            while not _put(to_write, (tile, block, pred, bands), stop):
                check_threads()
        if done // TRIM_EVERY != (done + len(batch)) // TRIM_EVERY:
            _trim_heap()
        done += len(batch)
        reporter.update(done / max(total, 1), f"fused {done}/{total} tiles")

    pool = ThreadPoolExecutor(streams, thread_name_prefix="csakd-compute") if streams > 1 else None
    pending: Deque[Tuple[list, Future]] = deque()  # batches being predicted, oldest first

    def flush(batch: list) -> None:
        if pool is None:
            emit(batch, predict(batch))
            return
        pending.append((batch, pool.submit(predict, batch)))
        if len(pending) >= streams:
            drain(1)

    def drain(count: int) -> None:
        for _ in range(min(count, len(pending))):
            batch, future = pending.popleft()
            emit(batch, future.result())

    reader.start()
    writer.start()
    try:
        batch: list = []
        while True:
            try:
                item = to_compute.get(timeout=0.1)
            except queue.Empty:
                check_threads()
                continue
            if item is _DONE:
                break
            batch.append(item)
            if len(batch) == batch_size:
                flush(batch)
                batch = []
                check_threads()
        if batch:
            flush(batch)
        drain(len(pending))
        _put(to_write, _DONE, stop)
        writer.join()
        check_threads()
    finally:
        stop.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        reader.join()
        writer.join()
        if seams is not None:
            seams.close()
    timings.infer = _covered(busy)
    timings.blend, timings.write = blender.timings.blend, blender.timings.write
    distinct = len({(tile.row, tile.col) for tile, _block, _carried in order})
    carried = sum(1 for *_rest, c in order if c)
    return PipelineResult(tiles=distinct, skipped=len(skipped), recomputed=total - distinct - carried,
                          batch_size=backoff.batch_size, timings=timings, skipped_tiles=tuple(skipped),
                          carried=carried, streams=max(1, streams))
