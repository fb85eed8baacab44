"""Tile plans with a receptive-field halo and partition-of-unity blending.

A fusion method runs on tiles of the low-resolution (LR) grid and returns
tiles of the high-resolution (HR) output grid, ``scale`` times finer.  This
module decides where the tiles lie and how their outputs are blended; it does
no I/O.  Offsets and sizes are integers in pixels; ``Window(col_off, row_off,
width, height)`` follows rasterio (column = x, row = y, origin at the
top-left corner of the raster).

Tile-count and edge rules
-------------------------
Per axis of ``n`` LR pixels and a requested core size ``tile``:

* the axis is cut into ``k = ceil(n / tile)`` *cores* whose sizes differ by at
  most one pixel (``n // k`` or ``n // k + 1``, larger ones first), so a
  raster smaller than one tile gives one tile, and no sliver is left at the
  end;
* the cores partition the axis; each tile's *window* is its core grown by
  ``overlap`` on both sides, clipped to the raster (no ramp at raster edges);
* neighbouring windows overlap by ``2 * overlap`` LR pixels around each core
  boundary.  That *seam* is blended on the HR grid with a ramp that goes from
  1 to 0 for the left/upper tile and from 0 to 1 for the right/lower one, so
  the weights of the (one or two per axis) tiles covering a pixel sum to one;
* ``overlap`` must not exceed ``tile // 4``: then every core is at least
  ``2 * overlap`` wide and seams never meet;
* every tile is *read* with the same size, ``max core + 2 * (overlap + halo)``
  per axis, so tiles batch into one tensor; the read window starts
  ``overlap + halo`` before the core and may extend beyond the raster, where
  reads are mirrored (:func:`reflect_indices`).

The HR output axis is cut into *segments*: a segment is covered either by one
tile (weight 1) or by the two tiles of a seam (ramp weights).  A tile's
weights over its HR window are the outer product of its row and column
weights (separable), and each output pixel lies in exactly one (row segment,
column segment) *cell*, which is what the streaming writer accumulates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Tuple

import numpy as np
from rasterio.windows import Window

from csakd_qgis.errors import TilingError

RAMPS = ("linear", "hann")


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Raster indices for positions ``start .. stop-1`` mirrored at the raster edges.

    Uses half-sample symmetric mirroring (numpy ``np.pad(mode="symmetric")``:
    ``c b a | a b c | c b a``), which repeats the edge pixel and is defined for
    a raster of one pixel.  Positions farther out than the raster size mirror
    again (the pattern is periodic with period ``2 * size``).

    Returns
    -------
    numpy.ndarray
        int64 indices in ``[0, size)``, length ``stop - start``.
    """
    if size < 1:
        raise TilingError(f"cannot mirror positions on an axis of {size} pixels")
    pos = np.arange(start, stop, dtype=np.int64) % (2 * size)
    return np.where(pos < size, pos, 2 * size - 1 - pos)


def reflect_pad(array: np.ndarray, pads: Tuple[Tuple[int, int], Tuple[int, int]]) -> np.ndarray:
    """Pad the last two axes of ``array`` (e.g. ``(C, h, w)``) by mirroring at its edges.

    Parameters
    ----------
    array:
        Array whose last two axes are rows and columns.
    pads:
        ``((top, bottom), (left, right))`` in pixels, each ``>= 0``; any size,
        also larger than the array (mirroring repeats).

    Returns
    -------
    numpy.ndarray
        Same dtype, shape ``(..., h + top + bottom, w + left + right)``; equal to
        ``np.pad(array, ..., mode="symmetric")`` (see :func:`reflect_indices`).
    """
    (top, bottom), (left, right) = pads
    if min(top, bottom, left, right) < 0:
        raise TilingError(f"padding must be >= 0, got {pads}")
    h, w = array.shape[-2:]
    rows = reflect_indices(-top, h + bottom, h)
    cols = reflect_indices(-left, w + right, w)
    return array[..., rows, :][..., cols]


def ramp(length: int, kind: str = "hann") -> np.ndarray:
    """Rising blend weights over a seam of ``length`` HR pixels.

    Sample ``k`` sits at ``t = (k + 0.5) / length``: linear gives ``t``, Hann
    gives ``sin(pi t / 2) ** 2``.  The falling side of the seam is ``1 - ramp``,
    so the two tiles of a seam sum to one.  float64, values in ``(0, 1)``.
    """
    if kind not in RAMPS:
        raise TilingError(f"unknown blend ramp {kind!r}; use one of {', '.join(RAMPS)}")
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    return t if kind == "linear" else np.sin(0.5 * np.pi * t) ** 2


@dataclass(frozen=True)
class Segment:
    """A run of HR output pixels along one axis covered by the same tiles.

    ``start``/``stop`` are HR pixel offsets; ``tiles`` holds one tile index
    along this axis (a core) or two (the seam between them, left/upper first).
    """

    start: int
    stop: int
    tiles: Tuple[int, ...]

    def weight(self, tile_index: int, kind: str) -> np.ndarray:
        """Weights (float64, length ``stop - start``) of tile ``tile_index`` in this segment."""
        if len(self.tiles) == 1:
            return np.ones(self.stop - self.start)
        rising = ramp(self.stop - self.start, kind)
        return rising if tile_index == self.tiles[1] else 1.0 - rising


@dataclass(frozen=True)
class AxisPlan:
    """Cores, windows and segments along one axis (all offsets in pixels)."""

    size: int
    scale: int
    cores: Tuple[Tuple[int, int], ...]  # LR (start, stop) per tile
    windows: Tuple[Tuple[int, int], ...]  # LR (start, stop), core +- overlap, clipped
    segments: Tuple[Segment, ...]  # HR
    read_size: int  # LR pixels read per tile, halo and overlap included
    margin: int  # LR pixels read before the core (overlap + halo)

    @classmethod
    def build(cls, size: int, tile: int, overlap: int, halo: int, scale: int) -> AxisPlan:
        """Plan one axis of ``size`` LR pixels (see the module docstring for the rules)."""
        count = math.ceil(size / tile)
        base, extra = divmod(size, count)
        edges = np.cumsum([0] + [base + (1 if i < extra else 0) for i in range(count)])
        cores = tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]))
        windows = tuple((max(a - overlap, 0), min(b + overlap, size)) for a, b in cores)
        segments = []
        for i, (a, b) in enumerate(cores):
            lo = a + overlap if i > 0 else a
            hi = b - overlap if i < count - 1 else b
            if hi > lo:
                segments.append(Segment(lo * scale, hi * scale, (i,)))
            if i < count - 1 and overlap > 0:
                segments.append(Segment((b - overlap) * scale, (b + overlap) * scale, (i, i + 1)))
        return cls(size, scale, cores, windows, tuple(segments),
                   max(b - a for a, b in cores) + 2 * (overlap + halo), overlap + halo)

    def tile_segments(self, index: int) -> Tuple[Segment, ...]:
        """Segments covered by tile ``index``, in order."""
        return tuple(s for s in self.segments if index in s.tiles)

    def weights(self, index: int, kind: str) -> np.ndarray:
        """Weights of tile ``index`` over its HR window (float64, length ``window * scale``)."""
        return np.concatenate([s.weight(index, kind) for s in self.tile_segments(index)])


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TilePlan`.

    Attributes
    ----------
    row, col:
        Tile indices in the plan's grid.
    core:
        LR window this tile is responsible for (cores partition the raster).
    window:
        LR window whose output the tile contributes (core grown by the overlap,
        clipped to the raster).
    read:
        LR window handed to the method: ``window`` grown by the halo (and by up
        to one pixel more so every tile has the same size); may extend beyond the
        raster, where reads are mirrored.
    out:
        HR output window, ``window`` times the scale.
    """

    row: int
    col: int
    core: Window
    window: Window
    read: Window
    out: Window

    @property
    def crop(self) -> Tuple[slice, slice]:
        """Slices (rows, cols) of ``out`` inside the method's HR prediction of ``read``."""
        scale = self.out.width // self.window.width
        y0 = (self.window.row_off - self.read.row_off) * scale
        x0 = (self.window.col_off - self.read.col_off) * scale
        return slice(y0, y0 + self.out.height), slice(x0, x0 + self.out.width)


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering an LR raster of ``lr_width`` x ``lr_height`` pixels, row-major."""

    lr_width: int
    lr_height: int
    scale: int
    tile: int
    overlap: int
    halo: int
    ramp: str
    rows: AxisPlan
    cols: AxisPlan

    @property
    def shape(self) -> Tuple[int, int]:
        """Tile grid ``(rows, cols)``."""
        return len(self.rows.cores), len(self.cols.cores)

    @property
    def out_width(self) -> int:
        """Output width in HR pixels."""
        return self.lr_width * self.scale

    @property
    def out_height(self) -> int:
        """Output height in HR pixels."""
        return self.lr_height * self.scale

    @property
    def read_shape(self) -> Tuple[int, int]:
        """LR ``(rows, cols)`` read for every tile (identical for all tiles)."""
        return self.rows.read_size, self.cols.read_size

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def __iter__(self) -> Iterator[Tile]:
        for r in range(self.shape[0]):
            for c in range(self.shape[1]):
                yield self.tile_at(r, c)

    def tile_at(self, row: int, col: int) -> Tile:
        """The tile in grid row ``row`` and column ``col``."""
        (cy0, cy1), (cx0, cx1) = self.rows.cores[row], self.cols.cores[col]
        (wy0, wy1), (wx0, wx1) = self.rows.windows[row], self.cols.windows[col]
        s = self.scale
        return Tile(
            row, col,
            core=Window(cx0, cy0, cx1 - cx0, cy1 - cy0),
            window=Window(wx0, wy0, wx1 - wx0, wy1 - wy0),
            read=Window(cx0 - self.cols.margin, cy0 - self.rows.margin,
                        self.cols.read_size, self.rows.read_size),
            out=Window(wx0 * s, wy0 * s, (wx1 - wx0) * s, (wy1 - wy0) * s),
        )

    def weights(self, tile: Tile) -> np.ndarray:
        """Blend weights of ``tile`` over its HR ``out`` window, float64 ``(h, w)``.

        Separable: the outer product of the row and column ramps.  Summed over
        all tiles at their ``out`` windows they give exactly one everywhere (up
        to float64 rounding).
        """
        return np.outer(self.rows.weights(tile.row, self.ramp), self.cols.weights(tile.col, self.ramp))


def plan_tiles(lr_width: int, lr_height: int, *, tile: int = 64, overlap: int = 8, halo: int = 0,
               scale: int, ramp: str = "hann") -> TilePlan:
    """Plan the tiles for an LR raster of ``lr_width`` x ``lr_height`` pixels.

    Parameters
    ----------
    lr_width, lr_height:
        LR raster size in pixels (``>= 1``).
    tile:
        Requested core size in LR pixels (``>= 1``); actual cores are at most this.
    overlap:
        LR pixels each window extends beyond its core (``0 <= overlap <= tile // 4``).
    halo:
        Extra LR pixels of context read on each side (the method's receptive field).
    scale:
        Integer HR/LR resolution ratio (``>= 1``).
    ramp:
        Seam weight shape, ``"hann"`` (default, smooth) or ``"linear"``.

    Raises
    ------
    TilingError
        When a size is not positive or the overlap is too large for the tile.
    """
    if lr_width < 1 or lr_height < 1:
        raise TilingError(f"the LR raster is {lr_width} x {lr_height} pixels; it needs at least one pixel")
    if tile < 1 or scale < 1 or halo < 0 or overlap < 0:
        raise TilingError(
            f"tile size ({tile}) and scale ({scale}) must be >= 1, halo ({halo}) and overlap ({overlap}) >= 0"
        )
    if overlap > tile // 4:
        raise TilingError(
            f"overlap {overlap} is too large for tile size {tile}: use an overlap of at most "
            f"{tile // 4} LR pixels (a quarter of the tile) or a larger tile"
        )
    if ramp not in RAMPS:
        raise TilingError(f"unknown blend ramp {ramp!r}; use one of {', '.join(RAMPS)}")
    return TilePlan(
        lr_width, lr_height, scale, tile, overlap, halo, ramp,
        rows=AxisPlan.build(lr_height, tile, overlap, halo, scale),
        cols=AxisPlan.build(lr_width, tile, overlap, halo, scale),
    )


def read_mirrored(read: Callable[[Window], Tuple[np.ndarray, np.ndarray]], window: Window,
                   width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of a ``width`` x ``height`` raster with ``read``, mirroring the parts outside it.

    ``read(window) -> (data (C, h, w), valid (h, w))`` reads inside the
    raster; the mirroring is :func:`reflect_indices`' (the tile halos' and
    the scene sample's convention).  A window inside the raster is returned
    as ``read`` gave it (no copy).
    """
    rows, cols = _mirrored(window, width, height)
    source = _spanned(rows, cols)
    data, valid = read(source)
    if data.shape[1:] == (len(rows), len(cols)):  # read as asked: nothing mirrored
        return data, valid
    rows, cols = rows - int(source.row_off), cols - int(source.col_off)
    return data[:, rows][:, :, cols], valid[rows][:, cols]


def mirrored_source(window: Window, width: int, height: int) -> Window:
    """The window of a ``width`` x ``height`` raster that :func:`read_mirrored` reads for ``window``."""
    return _spanned(*_mirrored(window, width, height))


def _mirrored(window: Window, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    return (reflect_indices(window.row_off, window.row_off + window.height, height),
            reflect_indices(window.col_off, window.col_off + window.width, width))


def _spanned(rows: np.ndarray, cols: np.ndarray) -> Window:
    r0, c0 = int(rows.min()), int(cols.min())
    return Window(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0)
