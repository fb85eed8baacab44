"""Blending tiles into the output: column blocks, their tile schedule, seam accumulation and block-aligned strips.

Every output pixel lies in one cell of the tile plan
(:mod:`csakd_qgis.fusion.tiling`).  :class:`Blender` makes cells covered by one
tile final at once and accumulates seam cells (weight x prediction) until all
their tiles have arrived; final cells are encoded straight into strips
(:class:`StripWriter`) that are written when complete, so GDAL only receives
whole blocks.  :class:`ColumnBlocks` cuts the output into column blocks so
the memory held does not grow with the raster (:mod:`csakd_qgis.fusion.pipeline`).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Protocol, Tuple, Union

import numpy as np
from rasterio.windows import Window

from csakd_qgis.fusion.tiling import Tile, TilePlan
from csakd_qgis.io.write import write_failure
from csakd_qgis.options import BLOCK_WIDTH, OUTPUT_BLOCK


class Sink(Protocol):
    """Where the blended output goes (a :class:`~csakd_qgis.io.write.RasterWriter`)."""

    dtype: str
    """The stored values' type (a numpy type name)."""

    def encode(self, data: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` float32 physical values (NaN = nodata) to stored values, written into ``out`` (returned).

        ``out`` is a ``(C, h, w)`` view of :attr:`dtype` into a strip.
        """

    def write_stored(self, stored: np.ndarray, window: Window) -> None:
        """Write encoded ``(C, h, w)`` values into the HR ``window``."""


@dataclass
class Timings:
    """Seconds spent per stage (reader, compute and writer threads overlap)."""

    read: float = 0.0
    infer: float = 0.0
    blend: float = 0.0
    write: float = 0.0


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
    def build(cls, plan: TilePlan, block_width: int = BLOCK_WIDTH, out_block: int = OUTPUT_BLOCK,
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

    def reaches_next(self, col: int, block: int) -> bool:
        """Whether tile column ``col``, visited by ``block``, reaches into the block after it too."""
        return block + 1 < len(self.columns) and col in self.columns[block + 1]

    def visited_before(self, col: int, block: int) -> bool:
        """Whether tile column ``col`` was already visited by the block before ``block``."""
        return block > 0 and col in self.columns[block - 1]


class _Carried:
    """Marker handed to :meth:`Blender.add` for a tile whose prediction the :class:`SeamCarry` holds."""

    def __repr__(self) -> str:
        return "CARRIED"


#: :meth:`Blender.add`'s ``prediction`` for a tile predicted by the block before (kept by :class:`SeamCarry`).
CARRIED = _Carried()


class SeamCarry:
    """Predictions of tiles that straddle a column-block boundary, kept on disk for the next block.

    A tile predicted in block ``k`` that reaches into block ``k + 1`` has
    the columns of its prediction from block ``k + 1``'s first column on
    written to a spill file (float32, ``(C, h, w)`` as predicted, NaN kept);
    block ``k + 1`` reads them back instead of predicting the tile again.
    Blocks alternate between two unnamed temporary files, and a file is
    emptied when the block after next starts writing to it, so the disk
    used is at most two block edges' worth: output rows x the tiles'
    overhang x bands x 4 bytes each (about 1.4 GB at 8000 rows, 224 bands
    and a 192-px overhang).  Plain seek/read/write, not a memory map: the
    data stays in the operating system's page cache, outside the process's
    resident memory.  Used by the writer thread only.

    Parameters
    ----------
    folder:
        Where the spill files are created (the output's folder: the same
        disk, not a RAM-backed ``/tmp``); None: the system's temporary folder.
    """

    def __init__(self, folder: Optional[str] = None) -> None:
        self.where = os.path.join(folder or tempfile.gettempdir(), ".csakd-seams")
        self.files = [tempfile.TemporaryFile(dir=folder, prefix=".csakd-seams-") for _ in range(2)]
        self.holds = [-1, -1]  # the block whose carries each file holds
        #: ``(row, col)`` -> ``(file, byte offset, shape or None for a tile without valid pixels, bands)``
        self.index: Dict[Tuple[int, int], Tuple[int, int, Optional[Tuple[int, ...]], int]] = {}

    def put(self, tile: Tile, for_block: int, part: Optional[np.ndarray], bands: int) -> None:
        """Keep ``part`` ``(C, h, w)`` float32 of ``tile`` (None: no valid pixel) until ``for_block`` takes it.

        Raises :class:`~csakd_qgis.errors.RasterWriteError` when the spill
        file cannot be written (saying so when the disk is full).
        """
        slot = for_block % 2
        f = self.files[slot]
        try:
            if self.holds[slot] != for_block:  # the carries it held were all taken by the block before
                f.seek(0)
                f.truncate()
                self.holds[slot] = for_block
            offset = f.seek(0, 2)
            if part is not None:
                f.write(np.ascontiguousarray(part, dtype=np.float32).tobytes())
        except OSError as error:
            raise write_failure(self.where, str(error), error) from error
        self.index[(tile.row, tile.col)] = (slot, offset, None if part is None else part.shape, bands)

    def take(self, tile: Tile) -> Tuple[Optional[np.ndarray], int]:
        """``(part, bands)`` put for ``tile`` by the block before; removed from the carry."""
        slot, offset, shape, bands = self.index.pop((tile.row, tile.col))
        if shape is None:
            return None, bands
        f = self.files[slot]
        f.seek(offset)
        part = np.empty(shape, dtype=np.float32)
        f.readinto(part.data.cast("B"))  # straight into the array, one copy
        return part, bands

    def close(self) -> None:
        """Delete the spill files."""
        for f in self.files:
            f.close()


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
    """Encodes output pieces into block-aligned strips and writes each strip when complete.

    Parameters
    ----------
    sink:
        Encodes each piece straight into its strip (``encode``) and receives
        each complete strip (``write_stored``).
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
        self.seconds = 0.0  # spent in sink.encode and sink.write_stored

    def put(self, values: np.ndarray, row: int, col: int, block: int) -> None:
        """Encode ``values`` ``(C, h, w)`` (physical, NaN = nodata) into the strips at HR ``(row, col)``, ``block``."""
        start = time.perf_counter()
        x0, x1 = self.spans[block]
        h, w = values.shape[1:]
        first, left = self.origin
        for strip in range((row - first) // self.rows, (row + h - 1 - first) // self.rows + 1):
            top = first + strip * self.rows
            strip_h = min(self.rows, self.height - top)
            entry = self.open.get((block, strip))
            if entry is None:
                buffer = np.empty((values.shape[0], strip_h, x1 - x0), dtype=self.sink.dtype)
                self.open[(block, strip)] = entry = [buffer, 0]
            r0, r1 = max(row, top), min(row + h, top + strip_h)
            self.sink.encode(values[:, r0 - row:r1 - row], out=entry[0][:, r0 - top:r1 - top, col - x0:col - x0 + w])
            entry[1] += (r1 - r0) * w
            if entry[1] == entry[0][0].size:
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
    carry:
        Keeps the part of a straddling tile's prediction that the next
        block needs (:class:`SeamCarry`); that block then hands
        :data:`CARRIED` instead of predicting the tile again.  None: every
        block gets its own prediction of the tiles it reaches.
    """

    def __init__(self, plan: TilePlan, sink: Sink, blocks: ColumnBlocks, rows: int = OUTPUT_BLOCK,
                 region: Optional[Window] = None, carry: Optional[SeamCarry] = None) -> None:
        self.plan = plan
        self.sink = sink
        self.blocks = blocks
        self.carry = carry
        region = region or Window(0, 0, plan.out_width, plan.out_height)
        self.row_span = (int(region.row_off), int(region.row_off + region.height))
        self.strips = StripWriter(sink, blocks.spans, rows, self.row_span[1],
                                  (self.row_span[0], int(region.col_off)))
        self.pending: Dict[Tuple[int, int, int], List] = {}
        self.timings = Timings()

    def add(self, tile: Tile, block: int, prediction: Union[np.ndarray, None, _Carried], bands: int) -> None:
        """Blend ``prediction`` ``(C, h, w)`` over ``tile.out`` into its cells in ``block``.

        ``prediction`` None: the tile has no valid pixel (all nodata);
        :data:`CARRIED`: the carry holds it from the block before (``bands`` unused).
        """
        x0, x1 = self.blocks.spans[block]
        origin = int(tile.out.col_off)  # HR column of the prediction's first column
        if isinstance(prediction, _Carried):
            if self.carry is None:
                raise ValueError("a carried tile reached a blender without a seam carry")
            start = time.perf_counter()
            prediction, bands = self.carry.take(tile)
            self.timings.write += time.perf_counter() - start
            origin = x0
        self._blend(tile, block, prediction, bands, origin)
        if self.carry is not None and self.blocks.reaches_next(tile.col, block):
            start = time.perf_counter()
            self.carry.put(tile, block + 1, None if prediction is None else prediction[:, :, x1 - origin:], bands)
            self.timings.write += time.perf_counter() - start

    def _blend(self, tile: Tile, block: int, prediction: Optional[np.ndarray], bands: int, origin: int) -> None:
        """:meth:`add` for a prediction whose first column is HR column ``origin``."""
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
                    y0, xo = r0 - tile.out.row_off, c0 - origin
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
                written = self.strips.seconds
                self.strips.put(part, r0, c0, block)
                self.timings.write += self.strips.seconds - written
