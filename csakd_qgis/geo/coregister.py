"""Present the LR-HSI and the HR-MSI on the grids of a :class:`~csakd_qgis.geo.grid.GridPlan`.

:func:`open_aligned` opens both rasters once and reads windows of them on the
plan's grids without loading a whole raster:

* the LR-HSI on ``plan.lr``: read directly when its pixels already are the
  grid's, a sub-pixel shift then applied in memory to each window
  (:mod:`csakd_qgis.geo.translate`, cubic); otherwise through a
  :class:`rasterio.vrt.WarpedVRT` ('average' resampling when the target is
  coarser than the source, 'cubic' otherwise), the shift folded into its
  transform;
* the HR-MSI on ``plan.output`` (directly when aligned, else warped the same
  way) and, for shift estimation, on ``plan.lr`` ('average').

Pixels outside a source footprint are NaN and invalid.

Thread-safety: GDAL datasets are not thread-safe.  An :class:`AlignedPair`
must be used from one thread at a time (the tiled engine's reader thread);
open one pair per thread to read in parallel.

:func:`coregister` writes the LR-HSI on the LR grid, shift corrected, as a
GeoTIFF, window by window.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import DatasetReaderBase
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.geo.grid import Grid, GridPlan, plan_grids
from csakd_qgis.geo.shift import ShiftEstimate, estimate_shift, fit_band_mixing
from csakd_qgis.geo.translate import AFTER, BEFORE, edge_indexes, outside_footprint, split_shift, translate
from csakd_qgis.io.bands import RasterInfo, data_band_indexes
from csakd_qgis.io.read import (
    checked_window,
    count_valid,
    open_raster,
    read_band_window,
    read_dataset_window,
    read_exclusion,
    read_info,
    valid_pixels,
)
from csakd_qgis.io.write import RasterWriter
from csakd_qgis.progress import SILENT, Reporter

#: Largest side, in LR pixels, of the central sample the shift is estimated on.
SHIFT_SAMPLE = 256
#: Rows and columns of LR pixels written per window by :func:`coregister`.
WRITE_BLOCK = 256
_ALIGN_EPS = 1e-6


def _pixel_offset(info: RasterInfo, grid: Grid) -> Optional[Tuple[int, int]]:
    """``(col, row)`` of ``grid``'s origin in ``info``'s pixels when their pixels coincide, else None."""
    t = info.transform
    if info.crs != grid.crs or t.b != 0 or t.d != 0:
        return None
    if abs(t.a - grid.transform.a) > _ALIGN_EPS * t.a or abs(t.e - grid.transform.e) > _ALIGN_EPS * t.a:
        return None
    col = (grid.transform.c - t.c) / t.a
    row = (grid.transform.f - t.f) / t.e
    if abs(col - round(col)) > _ALIGN_EPS or abs(row - round(row)) > _ALIGN_EPS:
        return None
    return int(round(col)), int(round(row))


#: Block size ``(columns, rows)`` of GDAL's warped VRTs (``VRTWarpedDataset``'s default; rasterio keeps it).
WARPED_BLOCK = (512, 128)


def warped_cache_mb(info: RasterInfo, grid: Grid, shift: Tuple[float, float] = (0.0, 0.0)) -> int:
    """GDAL block cache (MB) a window read of ``info`` warped onto ``grid`` needs; 0 when it is read directly.

    GDAL warps every band of a warped VRT's block at once and keeps the
    other bands' blocks in the block cache.  A read touches up to two
    blocks each way; when those blocks of every band (float32, as
    :class:`_Source` warps) do not fit beside the source's blocks, each band
    warps the whole block again: a guard sample of a 224-band LR-HSI
    shifted by 0.03 px took 262 s instead of 0.2 s under 64 MB.
    """
    if _pixel_offset(info, grid) is not None:  # read directly, a shift applied in memory
        return 0
    cols, rows = (min(n, size) for n, size in zip(WARPED_BLOCK, (grid.width, grid.height)))
    across, down = min(2, -(-grid.width // cols)), min(2, -(-grid.height // rows))
    return -(-across * down * cols * rows * info.count * 4 // 2**20)


def choose_resampling(info: RasterInfo, grid: Grid) -> Resampling:
    """'average' when ``grid`` is coarser than ``info`` (by more than 2 %), else 'cubic'."""
    if info.crs == grid.crs:
        source = math.sqrt(info.res[0] * info.res[1])
    else:
        from rasterio.warp import calculate_default_transform

        transform, _, _ = calculate_default_transform(info.crs, grid.crs, info.width, info.height, *info.bounds)
        source = math.sqrt(abs(transform.a * transform.e))
    target = math.sqrt(grid.res[0] * grid.res[1])
    return Resampling.average if target > 1.02 * source else Resampling.cubic


class _Source:
    """One raster presented on one grid: a direct window offset or a warped VRT."""

    def __init__(self, info: RasterInfo, dataset: DatasetReaderBase, grid: Grid, stack: ExitStack,
                 shift: Tuple[float, float] = (0.0, 0.0), resampling: Optional[Resampling] = None,
                 order: Optional[Sequence[int]] = None) -> None:
        self.info = info
        self.indexes = data_band_indexes(dataset)
        if order is not None:  # ``info`` describes the bands in this order already
            self.indexes = [self.indexes[b - 1] for b in order]
        self.good = [b.good for b in info.bands]
        offset = _pixel_offset(info, grid) if resampling is None else None
        self.offset = offset
        #: the sub-pixel shift applied in memory (:mod:`csakd_qgis.geo.translate`) to a raster on the grid's pixels
        self.shift = shift if offset is not None else (0.0, 0.0)
        self.resampling = None
        if offset is not None:
            self.dataset = dataset
            return
        self.resampling = resampling or choose_resampling(info, grid)
        transform = grid.transform * Affine.translation(*shift)
        options: Dict[str, Any] = dict(crs=grid.crs, transform=transform, width=grid.width, height=grid.height,
                                       resampling=self.resampling, dtype="float32")
        if dataset.nodata is None:
            options["add_alpha"] = True
        self.dataset = stack.enter_context(WarpedVRT(dataset, **options))

    def _window(self, window: Window) -> Window:
        if self.offset is None:
            return window
        return Window(window.col_off + self.offset[0], window.row_off + self.offset[1], window.width, window.height)

    def read(self, window: Window, boundless: bool) -> Tuple[np.ndarray, np.ndarray]:
        if self.shift != (0.0, 0.0):
            checked_window(self.dataset, self._window(window), boundless)  # refused as an unshifted read would be
            return self._read_translated(window)
        return read_dataset_window(self.dataset, self._window(window), self.indexes, scales=self.info.scales,
                                   offsets=self.info.offsets, good=self.good, boundless=boundless)

    def _read_translated(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``window`` of the grid read with the cubic's margin and moved by :attr:`shift` in memory.

        Pixels whose sample position falls outside the raster are NaN and
        invalid (the same whether or not the window reaches outside the grid).
        """
        assert self.offset is not None
        (ix, fx), (iy, fy) = split_shift(self.shift[0]), split_shift(self.shift[1])
        w, h = int(round(window.width)), int(round(window.height))
        col = int(round(window.col_off)) + self.offset[0] + ix  # the raster pixel before each sample position
        row = int(round(window.row_off)) + self.offset[1] + iy
        width, height = self.dataset.width, self.dataset.height
        cols_out, rows_out = outside_footprint(col + fx, w, width), outside_footprint(row + fy, h, height)
        if cols_out.all() or rows_out.all():
            return np.full((len(self.indexes), h, w), np.nan, np.float32), np.zeros((h, w), bool)
        wide = Window(col - BEFORE, row - BEFORE, w + BEFORE + AFTER, h + BEFORE + AFTER)
        data, _ = read_band_window(self.dataset, wide, self.indexes, scales=self.info.scales,
                                   offsets=self.info.offsets, boundless=True)
        if wide.col_off < 0 or wide.col_off + wide.width > width:
            data = data[:, :, edge_indexes(wide.col_off, wide.width, width)]
        if wide.row_off < 0 or wide.row_off + wide.height > height:
            data = data[:, edge_indexes(wide.row_off, wide.height, height)]
        moved = translate(data, fx, fy, np.asarray(self.good, dtype=bool))
        moved[:, rows_out] = np.nan
        moved[:, :, cols_out] = np.nan
        return valid_pixels(moved, np.isfinite(moved), self.good)

    def count_valid(self, window: Window) -> np.ndarray:
        return count_valid(self.dataset, self._window(window), self.indexes, scales=self.info.scales,
                           offsets=self.info.offsets)


class _Mask:
    """Mask rasters (nonzero = exclude) presented on one grid: nearest, or 'max' onto a coarser grid.

    'max' excludes a coarse pixel when any masked source pixel falls in it
    (an HR-MSI mask read on the LR grid).  ``shift`` moves the grid as for
    the data the masks belong to.
    """

    def __init__(self, paths: Sequence[str], grid: Grid, stack: ExitStack,
                 shift: Tuple[float, float] = (0.0, 0.0)) -> None:
        self.sources: List[Tuple[Any, Optional[Tuple[int, int]]]] = []
        for path in paths:
            dataset = stack.enter_context(open_raster(path))
            info = read_info(path)
            offset = _pixel_offset(info, grid)
            if offset is not None:  # nearest neighbour of a shifted grid: the pixel the rounded shift reaches
                offset = (offset[0] + round(shift[0]), offset[1] + round(shift[1]))
            else:
                coarser = choose_resampling(info, grid) is Resampling.average
                dataset = stack.enter_context(WarpedVRT(
                    dataset, crs=grid.crs, transform=grid.transform * Affine.translation(*shift), width=grid.width,
                    height=grid.height, resampling=Resampling.max if coarser else Resampling.nearest))
            self.sources.append((dataset, offset))

    def apply(self, window: Window, data: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(data, valid)`` with the masked pixels of ``window`` invalid and NaN."""
        for dataset, offset in self.sources:
            shifted = window if offset is None else Window(window.col_off + offset[0], window.row_off + offset[1],
                                                           window.width, window.height)
            excluded = read_exclusion(dataset, shifted)
            if excluded.any():
                valid = valid & ~excluded
                data[:, excluded] = np.nan
        return data, valid


class AlignedPair:
    """Windowed readers of an LR-HSI and an HR-MSI on a plan's grids (use from one thread).

    Created by :func:`open_aligned`; ``shift`` is the ``(dx, dy)`` correction
    in LR pixels applied to LR-HSI reads (see :mod:`csakd_qgis.geo.shift`).
    ``msi_order`` (1-based band numbers) reads the HR-MSI's bands in that
    order (``msi_info`` describes them in it).  ``lr_masks`` and
    ``msi_masks`` are rasters of each input's pixels to exclude (nonzero);
    those pixels are invalid in every read.
    """

    def __init__(self, lr_info: RasterInfo, msi_info: RasterInfo, plan: GridPlan,
                 shift: Tuple[float, float], stack: ExitStack, *, msi_order: Optional[Sequence[int]] = None,
                 lr_masks: Sequence[str] = (), msi_masks: Sequence[str] = ()) -> None:
        self.lr_info, self.msi_info, self.plan, self.shift = lr_info, msi_info, plan, shift
        lr_ds = stack.enter_context(open_raster(lr_info.path))
        msi_ds = stack.enter_context(open_raster(msi_info.path))
        self._lr = _Source(lr_info, lr_ds, plan.lr, stack, shift=shift)
        self._msi = _Source(msi_info, msi_ds, plan.output, stack, order=msi_order)
        self._msi_lr = _Source(msi_info, msi_ds, plan.lr, stack, resampling=Resampling.average, order=msi_order)
        self._lr_mask = _Mask(lr_masks, plan.lr, stack, shift=shift)
        self._msi_mask = _Mask(msi_masks, plan.output, stack)
        self._msi_lr_mask = _Mask(msi_masks, plan.lr, stack)

    @property
    def lr_warped(self) -> bool:
        """True when LR-HSI reads are resampled (reprojection, other grid or shift)."""
        return self._lr.offset is None or self._lr.shift != (0.0, 0.0)

    @property
    def msi_warped(self) -> bool:
        """True when HR-MSI reads on the output grid are resampled."""
        return self._msi.offset is None

    def read_lr(self, window: Window, boundless: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """LR-HSI ``(C, h, w)`` float32 physical values and ``valid (h, w)`` for a window of ``plan.lr``.

        With ``boundless`` the window may reach outside the LR grid (tile
        halos); those pixels are NaN and invalid.
        """
        return self._lr_mask.apply(window, *self._lr.read(window, boundless))

    def count_lr_valid(self, window: Window) -> np.ndarray:
        """``(C,)`` valid pixels of each LR-HSI band in a window of ``plan.lr``, each band judged on its own."""
        return self._lr.count_valid(window)

    def read_msi(self, window: Window, boundless: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """HR-MSI ``(m, h, w)`` float32 and ``valid (h, w)`` for a window of ``plan.output``."""
        return self._msi_mask.apply(window, *self._msi.read(window, boundless))

    def read_msi_lr(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """HR-MSI averaged onto ``plan.lr`` (``s x s`` block means when aligned) for a window of it."""
        return self._msi_lr_mask.apply(window, *self._msi_lr.read(window, False))


@contextmanager
def open_aligned(lr_path: str, msi_path: str, plan: GridPlan, shift: Tuple[float, float] = (0.0, 0.0),
                 lr_info: Optional[RasterInfo] = None, *, msi_info: Optional[RasterInfo] = None,
                 msi_order: Optional[Sequence[int]] = None, lr_masks: Sequence[str] = (),
                 msi_masks: Sequence[str] = ()) -> Iterator[AlignedPair]:
    """Open the LR-HSI and HR-MSI on ``plan``'s grids; closes every dataset on exit.

    ``lr_info`` and ``msi_info`` replace the inputs' own band information
    (the plan's: bands found empty in the data marked bad, MSI wavelengths
    filled in, MSI bands in ``msi_order``); ``msi_order``, ``lr_masks`` and
    ``msi_masks`` are those of :class:`AlignedPair`.
    """
    with ExitStack() as stack:
        yield AlignedPair(lr_info or read_info(lr_path), msi_info or read_info(msi_path), plan,
                          (float(shift[0]), float(shift[1])), stack, msi_order=msi_order, lr_masks=lr_masks,
                          msi_masks=msi_masks)


def central_window(grid: Grid, size: int) -> Window:
    """Window of at most ``size x size`` pixels at the centre of ``grid``."""
    width, height = min(size, grid.width), min(size, grid.height)
    return Window((grid.width - width) // 2, (grid.height - height) // 2, width, height)


def measure_shift(pair: AlignedPair, srf: Optional[np.ndarray] = None) -> ShiftEstimate:
    """Estimate the LR-HSI's shift relative to the HR-MSI on a central LR sample.

    ``srf`` ``(m, C)`` projects the LR-HSI onto the MSI bands; None fits the
    projection by non-negative least squares on the sample itself.
    """
    window = central_window(pair.plan.lr, SHIFT_SAMPLE)
    lr, lr_valid = pair.read_lr(window)
    msi, msi_valid = pair.read_msi_lr(window)
    valid = lr_valid & msi_valid
    weights = fit_band_mixing(lr, msi, valid) if srf is None else np.asarray(srf, np.float64)
    if weights.shape != (msi.shape[0], lr.shape[0]):
        raise InputError(f"spectral response matrix {weights.shape} does not match {msi.shape[0]} HR-MSI and "
                         f"{lr.shape[0]} LR-HSI bands.")
    usable = np.isfinite(lr[:, valid]).all(axis=1) if valid.any() else np.ones(lr.shape[0], bool)
    projected = np.einsum("mc,chw->mhw", weights[:, usable], np.nan_to_num(lr[usable]))
    return estimate_shift(projected, msi, valid)


@dataclass(frozen=True)
class CoregReport:
    """What :func:`coregister` did.

    ``lr_grid`` is the grid of the written file, ``output_grid`` the HR grid
    a fusion would produce; the shift is in LR pixels (+x east, +y south).
    """

    output: str
    lr_grid: Grid
    output_grid: Grid
    scale: int
    shift: Optional[ShiftEstimate]
    shift_applied: bool
    notes: Tuple[str, ...]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary."""
        def grid(g: Grid) -> Dict[str, Any]:
            return {"crs": g.crs.to_string(), "transform": list(g.transform)[:6], "width": g.width,
                    "height": g.height, "resolution": list(g.res), "bounds": list(g.bounds)}

        shift = None if self.shift is None else {
            "dx": self.shift.dx, "dy": self.shift.dy, "confidence": self.shift.confidence,
            "reliable": self.shift.reliable, "message": self.shift.message}
        return {"output": self.output, "scale": self.scale, "lr_grid": grid(self.lr_grid),
                "output_grid": grid(self.output_grid), "shift": shift, "shift_applied": self.shift_applied,
                "notes": list(self.notes)}


def coregister(lr_path: str, msi_path: str, output: str, *, scale: Optional[int] = None,
               shift_correction: bool = True, srf: Optional[np.ndarray] = None, overwrite: bool = False,
               reporter: Optional[Reporter] = None, lr_masks: Sequence[str] = (),
               msi_masks: Sequence[str] = ()) -> CoregReport:
    """Write the LR-HSI resampled onto the aligned LR grid, shift corrected, as a float32 GeoTIFF.

    Parameters
    ----------
    lr_path, msi_path:
        GDAL names of the LR-HSI and the HR-MSI.
    output:
        Destination GeoTIFF (band metadata of the LR-HSI kept, nodata NaN).
    scale:
        Integer resolution ratio; None derives it (see :func:`~csakd_qgis.geo.grid.plan_grids`).
    shift_correction:
        Estimate the sub-pixel shift and apply it when reliable.
    srf:
        Optional ``(m, C)`` spectral response matrix; None fits one (NNLS).
    overwrite:
        Replace an existing ``output``.
    reporter:
        Progress and cancellation.
    lr_masks, msi_masks:
        Rasters of pixels to leave out of the shift estimate (nonzero), on
        each input's grid; the written LR-HSI keeps every pixel.
    """
    reporter = reporter or SILENT
    lr_info, msi_info = read_info(lr_path), read_info(msi_path)
    plan = plan_grids(lr_info, msi_info, scale=scale)
    notes = list(plan.notes)
    estimate: Optional[ShiftEstimate] = None
    shift = (0.0, 0.0)
    reporter.update(0.0, "estimating the shift" if shift_correction else "writing")
    if shift_correction:
        with open_aligned(lr_path, msi_path, plan, lr_masks=lr_masks, msi_masks=msi_masks) as pair:
            estimate = measure_shift(pair, srf)
        notes.append(estimate.message)
        if estimate.reliable:
            shift = (estimate.dx, estimate.dy)
    writing = reporter.phase(0.2 if shift_correction else 0.0, 1.0)
    grid = plan.lr
    with open_aligned(lr_path, msi_path, plan, shift) as pair, \
            RasterWriter(output, width=grid.width, height=grid.height, count=lr_info.count, crs=grid.crs,
                         transform=grid.transform, bands=lr_info.bands, overwrite=overwrite) as writer:
        windows = [Window(col, row, min(WRITE_BLOCK, grid.width - col), min(WRITE_BLOCK, grid.height - row))
                   for row in range(0, grid.height, WRITE_BLOCK) for col in range(0, grid.width, WRITE_BLOCK)]
        for done, window in enumerate(windows):
            writing.update(done / len(windows), "writing the co-registered LR-HSI")
            data, _ = pair.read_lr(window)
            writer.write(data, window)
    writing.update(1.0, "done")
    return CoregReport(str(output), grid, plan.output, plan.scale, estimate, shift != (0.0, 0.0), tuple(notes))
