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
   of the tile plan (:mod:`csakd_qgis.tiling`); cells covered by one tile are
   written at once, seam cells are accumulated (weight x prediction) until
   all their tiles have arrived, then written and freed.

Memory does not grow with the raster: tiles are visited in *column blocks*
of at most ``block_width`` output pixels, row-major inside a block, so only
the seams below the current row of one block are pending.  The vertical seam
between two blocks is resolved by predicting the first tile column of the
next block once more (a "ghost" tile that contributes only that seam); the
extra work is one tile column per block.  Peak memory is therefore about
``queue tiles + batch x tile + block_width x 2 overlap x scale x bands``.

A tile whose output window has no valid pixel is not predicted (counted as
skipped once, ghosts not counted).  Output pixels are NaN (nodata) where the MSI pixel or the LR-HSI
pixel covering it is invalid.  Cancellation is checked once per batch.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np
from rasterio.windows import Window

from .devices import OomBackoff
from .methods import FusionMethod
from .progress import SILENT, Reporter
from .tiling import Tile, TilePlan, reflect_indices

#: Default width (HR pixels) of a column block; see the module docstring.
BLOCK_WIDTH = 2048


class PairSource(Protocol):
    """LR-HSI on the LR grid, HR-MSI on the output grid (e.g. :class:`~csakd_qgis.coregister.AlignedPair`)."""

    def read_lr(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(data float32 (C, h, w) NaN = invalid, valid bool (h, w))`` for a window inside the LR raster."""

    def read_msi(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(data float32 (m, H, W), valid bool (H, W))`` for a window inside the HR grid."""


class Sink(Protocol):
    """Where blended output windows go (a :class:`~csakd_qgis.raster_io.RasterWriter`)."""

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write ``(C, h, w)`` float32 physical values (NaN = nodata) into the HR ``window``."""


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
    """Counts and timings of one pipeline run."""

    tiles: int
    skipped: int
    recomputed: int
    batch_size: int
    timings: Timings


def _read_mirrored(read: Callable[[Window], Tuple[np.ndarray, np.ndarray]], window: Window,
                   width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of a ``width`` x ``height`` raster, mirroring the parts outside it."""
    rows = reflect_indices(window.row_off, window.row_off + window.height, height)
    cols = reflect_indices(window.col_off, window.col_off + window.width, width)
    r0, c0 = int(rows.min()), int(cols.min())
    data, valid = read(Window(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0))
    return data[:, rows - r0][:, :, cols - c0], valid[rows - r0][:, cols - c0]


def schedule(plan: TilePlan, block_width: int = BLOCK_WIDTH) -> Iterator[Tuple[Tile, int]]:
    """Visit order of the tiles: ``(tile, block)`` pairs, ghost tiles included.

    Column blocks hold ``K = max(1, block_width // (tile * scale))`` tile
    columns; block ``b`` visits rows top to bottom, in each row its columns
    and then column ``(b + 1) K`` (the ghost, ``tile.col // K != block``)
    when it exists.
    """
    rows, cols = plan.shape
    per_block = max(1, block_width // (plan.tile * plan.scale))
    for block in range(0, (cols + per_block - 1) // per_block):
        first = block * per_block
        last = min(first + per_block + 1, cols)
        for r in range(rows):
            for c in range(first, last):
                yield plan.tile_at(r, c), block


class Blender:
    """Accumulates weighted tile predictions per cell and writes completed cells.

    Parameters
    ----------
    plan:
        The tile plan.
    sink:
        Receives completed cells.
    block_width:
        As for :func:`schedule` (decides which block owns a seam cell).
    """

    def __init__(self, plan: TilePlan, sink: Sink, block_width: int = BLOCK_WIDTH) -> None:
        self.plan = plan
        self.sink = sink
        self.per_block = max(1, block_width // (plan.tile * plan.scale))
        self.pending: Dict[Tuple[int, int], List] = {}
        self.timings = Timings()

    def _owner(self, x_segment) -> int:
        return x_segment.tiles[0] // self.per_block

    def add(self, tile: Tile, block: int, prediction: Optional[np.ndarray], bands: int) -> None:
        """Blend ``prediction`` ``(C, h, w)`` over ``tile.out`` (None = all nodata) into its cells."""
        plan = self.plan
        for yi, ys in enumerate(plan.rows.segments):
            if tile.row not in ys.tiles:
                continue
            for xi, xs in enumerate(plan.cols.segments):
                if tile.col not in xs.tiles or self._owner(xs) != block:
                    continue
                start = time.perf_counter()
                shape = (bands, ys.stop - ys.start, xs.stop - xs.start)
                if prediction is None:
                    part = np.full(shape, np.nan, dtype=np.float32)
                else:
                    y0, x0 = ys.start - tile.out.row_off, xs.start - tile.out.col_off
                    part = prediction[:, y0:y0 + shape[1], x0:x0 + shape[2]]
                expected = len(ys.tiles) * len(xs.tiles)
                if expected > 1:
                    weight = np.outer(ys.weight(tile.row, plan.ramp), xs.weight(tile.col, plan.ramp))
                    part = part * weight.astype(np.float32)
                    entry = self.pending.get((yi, xi))
                    if entry is None:
                        self.pending[(yi, xi)] = entry = [part, 0]
                    else:
                        entry[0] += part
                    entry[1] += 1
                    if entry[1] < expected:
                        self.timings.blend += time.perf_counter() - start
                        continue
                    part = self.pending.pop((yi, xi))[0]
                self.timings.blend += time.perf_counter() - start
                start = time.perf_counter()
                self.sink.write(part, Window(xs.start, ys.start, shape[2], shape[1]))
                self.timings.write += time.perf_counter() - start


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
                 *, batch_size: int = 4, block_width: int = BLOCK_WIDTH, reporter: Reporter = SILENT,
                 notify: Optional[Callable[[str], None]] = None) -> PipelineResult:
    """Fuse every tile of ``plan`` and write the blended output to ``sink``.

    Parameters
    ----------
    open_source:
        Called once in the reader thread; returns a context manager giving
        the input pair that thread reads (and closes) alone.
    method:
        The fusion method; its ``halo`` must be the one ``plan`` was made with.
    plan:
        Tile plan of the LR raster.
    sink:
        Output writer, HR windows in physical units.
    radiometry:
        Levels and fill values measured on the whole scene.
    batch_size:
        Tiles per ``method.predict`` call (halved on out-of-memory errors).
    block_width:
        Output pixels per column block (see the module docstring).
    reporter:
        Progress per batch (fraction of tiles done) and cancellation.
    notify:
        Receives out-of-memory messages.

    Raises
    ------
    Cancelled
        When the reporter says so (checked once per batch).
    TileTooLarge
        When one tile does not fit in the device memory.
    """
    s = plan.scale
    order = list(schedule(plan, block_width))
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
                lr = np.where(lr_valid, lr, lr_fill) / np.float32(radiometry.lr_level)
                msi = np.where(msi_valid, msi, msi_fill) / np.float32(radiometry.msi_level)
                timings.read += time.perf_counter() - start
                item = (tile, block, lr.astype(np.float32), msi.astype(np.float32), valid)
                if not _put(to_compute, item, stop):
                    return
        _put(to_compute, _DONE, stop)

    blender = Blender(plan, sink, block_width)

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
    skipped = done = 0
    total = len(order)

    def check_threads() -> None:
        for stage in (reader, writer):
            if stage.error is not None:
                raise stage.error

    def flush(batch: list) -> None:
        nonlocal skipped, done
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
                skipped += tile.col // blender.per_block == block
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
    return PipelineResult(tiles=len(plan), skipped=skipped, recomputed=total - len(plan),
                          batch_size=backoff.batch_size, timings=timings)
