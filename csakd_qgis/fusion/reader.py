"""The reader stage of the tiled pipeline: the input pair's windows, tile by tile, ready for a method.

:func:`read_tiles` is what the pipeline's reader thread runs
(:mod:`csakd_qgis.fusion.pipeline`): for each visit of a run's order it
reads the tile's LR window (halo included, mirrored at the raster's edges)
and the matching HR-MSI window, fills invalid pixels with the scene's
per-band fill values and divides by the robust levels.  The LR-HSI is read
once per tile row of a column block (:class:`_RowStrip`).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Protocol, Sequence, Tuple

import numpy as np
from rasterio.windows import Window, union

from csakd_qgis.errors import TilingError
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.tiling import Tile, TilePlan, mirrored_source, read_mirrored


class PairSource(Protocol):
    """LR-HSI on the LR grid, HR-MSI on the output grid (e.g. :class:`~csakd_qgis.geo.coregister.AlignedPair`).

    Each read returns arrays of its own (not views of data the source
    keeps): the reader thread normalises them in place.
    """

    def read_lr(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(data float32 (C, h, w) NaN = invalid, valid bool (h, w))`` for a window inside the LR raster."""

    def read_msi(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(data float32 (m, H, W), valid bool (H, W))`` for a window inside the HR grid."""


#: One entry of a run's order: a tile, the column block that visits it, and whether the seam carry holds it.
Visit = Tuple[Tile, int, bool]


class _RowStrip:
    """LR-HSI reads of one tile row of one column block, served from one read of their union.

    GDAL decodes a block again for every read that touches it once its block
    cache no longer holds it.  A 224-band tile of a band-interleaved raster
    touches up to 4 blocks per band (115 MB decoded for int16 256-px
    blocks), more than the cache keeps, so reading tile by tile decoded each
    block once per tile that touches it (about 6 along a tile row).  Reading
    the union once decodes each block once per tile row.  Holds one union:
    read rows x (column block + 2 tile reads) LR px x bands, float32.
    """

    def __init__(self, read: Callable[[Window], Tuple[np.ndarray, np.ndarray]]) -> None:
        self._read = read
        self._window: Optional[Window] = None
        self._held: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def select(self, window: Window) -> None:
        """Hold ``window`` (read with the source's ``read_lr``) unless it is held already."""
        if window != self._window:
            self._held = None  # freed before the next is read
            self._held = self._read(window)
            self._window = window

    def read(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``read_lr(window)`` for a ``window`` inside the held one, as arrays of their own."""
        held, arrays = self._window, self._held
        assert held is not None and arrays is not None, "select a window first"
        r0, c0 = int(window.row_off - held.row_off), int(window.col_off - held.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if r0 < 0 or c0 < 0 or r1 > held.height or c1 > held.width:
            raise TilingError(f"LR window {window} is outside the row strip {held}")
        data, valid = arrays
        return data[:, r0:r1, c0:c1].copy(), valid[r0:r1, c0:c1].copy()


def _row_windows(plan: TilePlan, order: Sequence[Visit]) -> Dict[Tuple[int, int], Window]:
    """``(tile row, column block) -> `` the LR window that holds every read of that row's tiles in that block.

    Carried tiles are not read and do not count.
    """
    found: Dict[Tuple[int, int], Window] = {}
    for tile, block, carried in order:
        if not carried:
            window = mirrored_source(tile.read, plan.lr_width, plan.lr_height)
            key = (tile.row, block)
            found[key] = union(found[key], window) if key in found else window
    return found


def read_tiles(source: PairSource, plan: TilePlan, order: Sequence[Visit],
               radiometry: Radiometry) -> Iterator[Tuple[Tile, int, Optional[np.ndarray], Optional[np.ndarray],
                                                         Optional[np.ndarray]]]:
    """The reader thread's work: ``(tile, block, lr, msi, valid)`` of each visit in ``order`` (:func:`_read_tile`).

    The LR-HSI is read one tile row of one column block at a time
    (:class:`_RowStrip`); the HR-MSI tile by tile.  A carried visit is not
    read: its arrays are None.
    """
    windows = _row_windows(plan, order)
    strip = _RowStrip(source.read_lr)
    for tile, block, carried in order:
        if carried:
            yield tile, block, None, None, None
            continue
        strip.select(windows[(tile.row, block)])
        yield (tile, block, *_read_tile(strip.read, source.read_msi, tile, plan, radiometry))


def _read_tile(read_lr: Callable[[Window], Tuple[np.ndarray, np.ndarray]],
               read_msi: Callable[[Window], Tuple[np.ndarray, np.ndarray]], tile: Tile, plan: TilePlan,
               radiometry: Radiometry) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lr (C, h, w), msi (m, h s, w s), valid (out rows, out cols))`` of one tile, ready for the method.

    The LR window with its halo and the matching HR-MSI window, mirrored at
    the raster's edges, invalid pixels filled with the scene's per-band fill
    values and each input divided by its robust level (float32); ``valid``
    marks the output pixels (the tile's crop) where both inputs are valid.
    """
    s = plan.scale
    lr, lr_valid = read_mirrored(read_lr, tile.read, plan.lr_width, plan.lr_height)
    hr_read = Window(tile.read.col_off * s, tile.read.row_off * s, tile.read.width * s, tile.read.height * s)
    msi, msi_valid = read_mirrored(read_msi, hr_read, plan.out_width, plan.out_height)
    rows, cols = tile.crop
    valid = (msi_valid & np.repeat(np.repeat(lr_valid, s, axis=0), s, axis=1))[rows, cols]
    return (_normalised(lr, lr_valid, radiometry.lr_fill, radiometry.lr_level),
            _normalised(msi, msi_valid, radiometry.msi_fill, radiometry.msi_level), valid)


def _normalised(data: np.ndarray, valid: np.ndarray, fill: np.ndarray, level: float) -> np.ndarray:
    """``data`` ``(C, h, w)`` float32, changed in place: ``fill`` ``(C,)`` where invalid or not finite, over ``level``.

    In place because the readers (:class:`PairSource`) return arrays of
    their own.
    """
    data = np.asarray(data, dtype=np.float32)
    replace = ~np.isfinite(data)
    replace |= ~valid
    np.copyto(data, fill.astype(np.float32)[:, None, None], where=replace)
    data /= np.float32(level)
    return data
