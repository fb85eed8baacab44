"""The tiled reader -> compute -> blender/writer pipeline.

Three stages overlap in time:

1. a **reader thread** opens its own input pair (GDAL datasets are not
   thread-safe, so the pair is made by a factory called in that thread),
   reads each tile's LR window (halo included, mirrored at raster edges) and
   the matching HR-MSI window, fills invalid pixels with the scene's per-band
   fill values, divides by the robust levels and queues the tile (bounded
   queue, so reading never runs far ahead);
2. the **compute loop** on the calling thread stacks tiles into batches, calls
   ``method.predict`` (halving the batch on out-of-memory errors, see
   :class:`~csakd_qgis.devices.OomBackoff`), multiplies back by the LR level,
   crops the halo and sets invalid output pixels to NaN;
3. a **writer thread** blends and writes: every output pixel lies in one cell
   of the tile plan (:mod:`csakd_qgis.fusion.tiling`); cells covered by one tile are
   final at once, seam cells are accumulated (weight x prediction) until all
   their tiles have arrived.  Final cells are encoded to the output dtype
   (``sink.encode``) and copied into *strips*: windows of ``out_block`` output
   rows across one column block, aligned to the output's blocks.  A strip is
   written (``sink.write_stored``) when its last pixel has arrived, so GDAL
   only ever receives whole blocks (plus the raster's right and bottom edge
   blocks, whole as far as the raster goes) and never compresses a block
   twice.

Memory does not grow with the raster: the output is cut into *column
blocks* of ``block_width`` HR pixels (a multiple of ``out_block``; the last
one narrower), processed one after the other, row-major inside a block.  A
block predicts every tile whose output window reaches into it and keeps
only the part inside it, so the one or two tile columns that straddle a
block boundary are predicted twice (``recomputed``; about
``tile x scale / block_width`` extra work).  At any time the writer holds
the seams below the current tile row of one block
(``block_width x 2 overlap x scale x bands`` float32) and the open strips
(those the current tile row reaches: ``out_block`` + one tile window of
rows x ``block_width x bands`` in the output dtype), plus the queues
(``2 x batch_size`` tiles each way).  None of it depends on the raster size.

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

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np
from rasterio.windows import Window

from csakd_qgis.devices import OomBackoff
from csakd_qgis.errors import TilingError
from csakd_qgis.fusion.methods import FusionMethod
from csakd_qgis.fusion.tiling import Tile, TilePlan, reflect_indices
from csakd_qgis.progress import SILENT, Reporter

#: Default width (HR pixels) of a column block; see the module docstring.
BLOCK_WIDTH = 1024

#: Default side (HR pixels) of the output's blocks, to which strips and column blocks are aligned.
OUT_BLOCK = 256


class PairSource(Protocol):
    """LR-HSI on the LR grid, HR-MSI on the output grid (e.g. :class:`~csakd_qgis.geo.coregister.AlignedPair`)."""

    def read_lr(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(data float32 (C, h, w) NaN = invalid, valid bool (h, w))`` for a window inside the LR raster."""

    def read_msi(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(data float32 (m, H, W), valid bool (H, W))`` for a window inside the HR grid."""


class Sink(Protocol):
    """Where the blended output goes (a :class:`~csakd_qgis.io.raster.RasterWriter`)."""

    def encode(self, data: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` float32 physical values (NaN = nodata) to stored values of the output dtype."""

    def write_stored(self, stored: np.ndarray, window: Window) -> None:
        """Write encoded ``(C, h, w)`` values into the HR ``window``."""


@dataclass(frozen=True)
class Radiometry:
    """Scene-wide normalisation: robust levels and per-band fill values in physical units."""

    lr_level: float
    msi_level: float
    lr_fill: np.ndarray  # (C,) float32
    msi_fill: np.ndarray  # (m,) float32


@dataclass
class Timings:
    """Seconds spent per stage (reader, compute and writer threads overlap)."""

    read: float = 0.0
    infer: float = 0.0
    blend: float = 0.0
    write: float = 0.0


@dataclass(frozen=True)
class PipelineResult:
    """Counts and timings of one pipeline run.

    ``tiles`` counts the distinct tiles that reach the run's region (all of
    the plan for the whole output), ``recomputed`` the extra predictions of
    tiles that straddle column blocks, ``skipped_tiles`` the ``(row, col)``
    of tiles with no valid output pixel (not predicted).
    """

    tiles: int
    skipped: int
    recomputed: int
    batch_size: int
    timings: Timings
    skipped_tiles: Tuple[Tuple[int, int], ...] = ()


def _read_mirrored(read: Callable[[Window], Tuple[np.ndarray, np.ndarray]], window: Window,
                   width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of a ``width`` x ``height`` raster, mirroring the parts outside it."""
    rows = reflect_indices(window.row_off, window.row_off + window.height, height)
    cols = reflect_indices(window.col_off, window.col_off + window.width, width)
    r0, c0 = int(rows.min()), int(cols.min())
    data, valid = read(Window(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0))
    return data[:, rows - r0][:, :, cols - c0], valid[rows - r0][:, cols - c0]


@dataclass(frozen=True)
class ColumnBlocks:
    """The output's column blocks and the tile columns each one predicts.

    Attributes
    ----------
    spans:
        HR column range ``(start, stop)`` of each block; starts are multiples
        of ``out_block``.
    columns:
        Per block, the tile columns whose HR output window reaches into its span.
    owner:
        Per tile column, the first block that predicts it (-1: none reaches
        into the blocks' columns).
    """

    spans: Tuple[Tuple[int, int], ...]
    columns: Tuple[Tuple[int, ...], ...]
    owner: Tuple[int, ...]

    @classmethod
    def build(cls, plan: TilePlan, block_width: int = BLOCK_WIDTH, out_block: int = OUT_BLOCK,
              span: Optional[Tuple[int, int]] = None) -> ColumnBlocks:
        """Cut HR columns ``span`` (default: the whole output) into blocks of ``block_width`` HR pixels.

        The width is rounded down to a multiple of ``out_block``; blocks start at ``span[0]``.
        """
        width = max(out_block, block_width // out_block * out_block)
        start, stop = span if span is not None else (0, plan.out_width)
        spans = tuple((x, min(x + width, stop)) for x in range(start, stop, width))
        s = plan.scale
        columns = tuple(tuple(c for c, (a, b) in enumerate(plan.cols.windows) if a * s < x1 and b * s > x0)
                        for x0, x1 in spans)
        owner = tuple(next((k for k, cols in enumerate(columns) if c in cols), -1) for c in range(plan.shape[1]))
        return cls(spans, columns, owner)


def schedule(plan: TilePlan, blocks: ColumnBlocks,
             rows: Optional[Tuple[int, int]] = None) -> Iterator[Tuple[Tile, int]]:
    """Visit order of the tiles: ``(tile, block)`` pairs, block by block, row-major inside a block.

    Tiles that straddle a block boundary appear once per block they reach
    into.  ``rows`` (HR ``(start, stop)``, default all) keeps the tile rows
    whose output window reaches into those rows.
    """
    y0, y1 = rows if rows is not None else (0, plan.out_height)
    s = plan.scale
    tile_rows = [r for r, (a, b) in enumerate(plan.rows.windows) if a * s < y1 and b * s > y0]
    for block, columns in enumerate(blocks.columns):
        for r in tile_rows:
            for c in columns:
                yield plan.tile_at(r, c), block


class StripWriter:
    """Collects encoded output pieces into block-aligned strips and writes each strip when complete.

    Parameters
    ----------
    sink:
        Receives each complete strip (``write_stored``).
    spans:
        HR column range of each column block (:attr:`ColumnBlocks.spans`).
    rows:
        Strip height in HR rows (the output's block height).
    height:
        Last HR row (exclusive) of the strips (the last strip is shorter).
    origin:
        HR ``(row, col)`` of the sink's top-left pixel: strips start at that
        row, and the windows handed to the sink are relative to it.

    Pieces must partition the output: a strip is written when the pieces it
    received cover it, counted in pixels.
    """

    def __init__(self, sink: Sink, spans: Tuple[Tuple[int, int], ...], rows: int, height: int,
                 origin: Tuple[int, int] = (0, 0)) -> None:
        self.sink = sink
        self.spans = spans
        self.rows = rows
        self.height = height
        self.origin = origin
        self.open: Dict[Tuple[int, int], List] = {}
        self.seconds = 0.0  # spent in sink.write_stored

    def put(self, stored: np.ndarray, row: int, col: int, block: int) -> None:
        """Place ``stored`` ``(C, h, w)`` (output dtype) at HR ``(row, col)`` inside column block ``block``."""
        x0, x1 = self.spans[block]
        h, w = stored.shape[1:]
        first, left = self.origin
        for strip in range((row - first) // self.rows, (row + h - 1 - first) // self.rows + 1):
            top = first + strip * self.rows
            strip_h = min(self.rows, self.height - top)
            entry = self.open.get((block, strip))
            if entry is None:
                buffer = np.empty((stored.shape[0], strip_h, x1 - x0), dtype=stored.dtype)
                self.open[(block, strip)] = entry = [buffer, 0]
            r0, r1 = max(row, top), min(row + h, top + strip_h)
            entry[0][:, r0 - top:r1 - top, col - x0:col - x0 + w] = stored[:, r0 - row:r1 - row]
            entry[1] += (r1 - r0) * w
            if entry[1] == entry[0][0].size:
                start = time.perf_counter()
                window = Window(x0 - left, top - first, x1 - x0, strip_h)
                self.sink.write_stored(self.open.pop((block, strip))[0], window)
                self.seconds += time.perf_counter() - start


class Blender:
    """Accumulates weighted tile predictions per cell and hands completed cells to a :class:`StripWriter`.

    Parameters
    ----------
    plan:
        The tile plan.
    sink:
        Encodes cells and receives complete strips.
    blocks:
        Column blocks (:class:`ColumnBlocks`); a cell straddling a block
        boundary is blended separately on each side.
    rows:
        Strip height in HR rows (the output's block height).
    region:
        HR window to blend and write (default: the whole output); the sink
        receives windows relative to its top-left corner.
    """

    def __init__(self, plan: TilePlan, sink: Sink, blocks: ColumnBlocks, rows: int = OUT_BLOCK,
                 region: Optional[Window] = None) -> None:
        self.plan = plan
        self.sink = sink
        self.blocks = blocks
        region = region or Window(0, 0, plan.out_width, plan.out_height)
        self.row_span = (int(region.row_off), int(region.row_off + region.height))
        self.strips = StripWriter(sink, blocks.spans, rows, self.row_span[1],
                                  (self.row_span[0], int(region.col_off)))
        self.pending: Dict[Tuple[int, int, int], List] = {}
        self.timings = Timings()

    def add(self, tile: Tile, block: int, prediction: Optional[np.ndarray], bands: int) -> None:
        """Blend ``prediction`` ``(C, h, w)`` over ``tile.out`` (None = all nodata) into its cells in ``block``."""
        plan = self.plan
        x0, x1 = self.blocks.spans[block]
        y_first, y_last = self.row_span
        for yi, ys in enumerate(plan.rows.segments):
            r0, r1 = max(ys.start, y_first), min(ys.stop, y_last)
            if tile.row not in ys.tiles or r1 <= r0:
                continue
            for xi, xs in enumerate(plan.cols.segments):
                c0, c1 = max(xs.start, x0), min(xs.stop, x1)
                if tile.col not in xs.tiles or c1 <= c0:
                    continue
                start = time.perf_counter()
                shape = (bands, r1 - r0, c1 - c0)
                if prediction is None:
                    part = np.full(shape, np.nan, dtype=np.float32)
                else:
                    y0, xo = r0 - tile.out.row_off, c0 - tile.out.col_off
                    part = prediction[:, y0:y0 + shape[1], xo:xo + shape[2]]
                expected = len(ys.tiles) * len(xs.tiles)
                if expected > 1:
                    x_weight = xs.weight(tile.col, plan.ramp)[c0 - xs.start:c1 - xs.start]
                    y_weight = ys.weight(tile.row, plan.ramp)[r0 - ys.start:r1 - ys.start]
                    part = part * np.outer(y_weight, x_weight).astype(np.float32)
                    entry = self.pending.get((block, yi, xi))
                    if entry is None:
                        self.pending[(block, yi, xi)] = entry = [part, 0]
                    else:
                        entry[0] += part
                    entry[1] += 1
                    if entry[1] < expected:
                        self.timings.blend += time.perf_counter() - start
                        continue
                    part = self.pending.pop((block, yi, xi))[0]
                self.timings.blend += time.perf_counter() - start
                start = time.perf_counter()
                stored = self.sink.encode(part)
                self.timings.write += time.perf_counter() - start
                written, start = self.strips.seconds, time.perf_counter()
                self.strips.put(stored, r0, c0, block)
                written = self.strips.seconds - written
                self.timings.blend += time.perf_counter() - start - written
                self.timings.write += written


_DONE = object()


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


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set; False when the pipeline is stopping."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def run_pipeline(open_source: Callable[[], ContextManager[PairSource]], method: FusionMethod, plan: TilePlan,
                 sink: Sink, radiometry: Radiometry,
                 *, batch_size: int = 4, block_width: int = BLOCK_WIDTH, out_block: int = OUT_BLOCK,
                 region: Optional[Window] = None, reporter: Reporter = SILENT,
                 notify: Optional[Callable[[str], None]] = None) -> PipelineResult:
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

    Raises
    ------
    TilingError
        When ``region`` is empty or leaves the output.
    Cancelled
        When the reporter says so (checked once per batch).
    TileTooLarge
        When one tile does not fit in the device memory.
    """
    s = plan.scale
    region = region or Window(0, 0, plan.out_width, plan.out_height)
    x0, y0 = int(region.col_off), int(region.row_off)
    x1, y1 = x0 + int(region.width), y0 + int(region.height)
    if not (0 <= x0 < x1 <= plan.out_width and 0 <= y0 < y1 <= plan.out_height):
        raise TilingError(f"region {region} is empty or leaves the {plan.out_width} x {plan.out_height} output")
    blocks = ColumnBlocks.build(plan, block_width, out_block, span=(x0, x1))
    order = list(schedule(plan, blocks, rows=(y0, y1)))
    stop = threading.Event()
    to_compute: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    to_write: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    timings = Timings()
    lr_fill = radiometry.lr_fill[:, None, None]
    msi_fill = radiometry.msi_fill[:, None, None]

    def read_all() -> None:
        with open_source() as source:
            for tile, block in order:
                start = time.perf_counter()
                lr, lr_valid = _read_mirrored(source.read_lr, tile.read, plan.lr_width, plan.lr_height)
                hr_read = Window(tile.read.col_off * s, tile.read.row_off * s, tile.read.width * s,
                                 tile.read.height * s)
                msi, msi_valid = _read_mirrored(source.read_msi, hr_read, plan.out_width, plan.out_height)
                rows, cols = tile.crop
                valid = (msi_valid & np.repeat(np.repeat(lr_valid, s, axis=0), s, axis=1))[rows, cols]
                lr = np.where(lr_valid & np.isfinite(lr), lr, lr_fill) / np.float32(radiometry.lr_level)
                msi = np.where(msi_valid & np.isfinite(msi), msi, msi_fill) / np.float32(radiometry.msi_level)
                timings.read += time.perf_counter() - start
                item = (tile, block, lr.astype(np.float32), msi.astype(np.float32), valid)
                if not _put(to_compute, item, stop):
                    return
        _put(to_compute, _DONE, stop)

    blender = Blender(plan, sink, blocks, out_block, region)

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

    def flush(batch: list) -> None:
        nonlocal done
        active = [item for item in batch if item[4].any()]
        start = time.perf_counter()
        if active:
            preds = backoff.run(method.predict, np.stack([a[2] for a in active]), np.stack([a[3] for a in active]))
        timings.infer += time.perf_counter() - start
        k = 0
        for tile, block, lr, _msi, valid in batch:
            if valid.any():
                rows, cols = tile.crop
                pred = preds[k][:, rows, cols] * np.float32(radiometry.lr_level)
                pred[:, ~valid] = np.nan
                k += 1
            else:
                pred = None
                if blocks.owner[tile.col] == block:
                    skipped.append((tile.row, tile.col))
            while not _put(to_write, (tile, block, pred, lr.shape[0]), stop):
                check_threads()
        done += len(batch)
        reporter.update(done / max(total, 1), f"fused {done}/{total} tiles")

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
        _put(to_write, _DONE, stop)
        writer.join()
        check_threads()
    finally:
        stop.set()
        reader.join()
        writer.join()
    timings.blend, timings.write = blender.timings.blend, blender.timings.write
    distinct = len({(tile.row, tile.col) for tile, _block in order})
    return PipelineResult(tiles=distinct, skipped=len(skipped), recomputed=total - distinct,
                          batch_size=backoff.batch_size, timings=timings, skipped_tiles=tuple(skipped))
