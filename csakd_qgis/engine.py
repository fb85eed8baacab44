"""The public fusion entry point, :func:`fuse`.

``fuse`` checks that the LR-HSI and the HR-MSI lie on nested grids, measures
the scene's radiometry on a sample, builds the fusion method and the tile
plan, and runs the reader -> compute -> writer pipeline
(:mod:`csakd_qgis.pipeline`) into an atomically published GeoTIFF.

Grids
-----
The output grid is the LR-HSI's extent at the HR-MSI's pixel size: ``scale``
(integer) times the LR width and height, origin at the LR-HSI's top-left
corner.  The inputs must share the CRS, the pixel-size ratio must be an
integer and the MSI's pixel edges must fall on the LR pixel edges, with the
MSI covering the LR-HSI's extent; otherwise :class:`~csakd_qgis.errors.GridError`
says so (co-register / resample the MSI first).

Integer outputs
---------------
``output_scale`` is the physical value of one stored unit (GDAL band scale).
For integer ``dtype`` it defaults to the LR-HSI's own band scale (1 when
absent), so an EnMAP LR-HSI stored as reflectance x 10000 gives an output
with the same numbers; for reflectance in ``[0, 1]`` pass ``1e-4`` to store
reflectance x 10000.  Float outputs default to ``output_scale=1``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from .devices import TileTooLarge, resolve_device, set_threads
from .errors import GridError, InputError
from .methods import FusionMethod, GSAMethod, block_mean, make_method
from .normalisation import robust_level
from .pipeline import BLOCK_WIDTH, Radiometry, run_pipeline
from .progress import SILENT, Reporter
from .raster_io import RasterInfo, RasterWriter, read_info, read_window
from .tiling import plan_tiles

DTYPES = ("float32", "int16", "uint16", "same")

#: Smallest tile (LR pixels) the out-of-memory policy goes down to.
MIN_TILE = 8

#: LR pixels per side of each sample window, and the number of windows per axis.
SAMPLE_SIZE, SAMPLE_GRID = 32, 4


@dataclass(frozen=True)
class Grid:
    """An output grid: CRS as WKT (empty when the inputs have none), affine transform, size in pixels."""

    crs_wkt: str
    transform: Tuple[float, ...]
    width: int
    height: int


@dataclass(frozen=True)
class FuseReport:
    """What :func:`fuse` did.

    ``shift`` is the LR-HSI's offset relative to the MSI in LR pixels
    ``(dx, dy)``; ``timings`` are seconds per stage (``read``, ``infer``,
    ``blend``, ``write`` overlap in time; ``total`` is wall-clock).
    """

    output: str
    grid: Grid
    scale: int
    shift: Tuple[float, float]
    shift_corrected: bool
    tiles_total: int
    tiles_skipped: int
    tiles_recomputed: int
    tile_size: int
    batch_size: int
    device: str
    method: str
    model: str
    timings: Dict[str, float]
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict."""
        data = dict(self.__dict__)
        data["grid"] = dict(self.grid.__dict__)
        data["shift"], data["notes"] = list(self.shift), list(self.notes)
        return data


class NestedPair:
    """An LR-HSI and an HR-MSI whose grids nest (see the module docstring); a :class:`PairSource`.

    Keeps both datasets open; close with :meth:`close` (or use as a context manager).
    """

    def __init__(self, lr_path: str, msi_path: str) -> None:
        self.lr_info, self.msi_info = read_info(lr_path), read_info(msi_path)
        self.scale, self.msi_offset = self._nest(self.lr_info, self.msi_info)
        self.lr_width, self.lr_height = self.lr_info.width, self.lr_info.height
        self._lr = rasterio.open(lr_path)
        self._msi = rasterio.open(msi_path)

    @staticmethod
    def _nest(lr: RasterInfo, msi: RasterInfo) -> Tuple[int, Tuple[int, int]]:
        hint = "co-register or resample the MSI onto a grid nested in the LR-HSI's (csakd coregister)"
        if (lr.crs is None) != (msi.crs is None) or (lr.crs is not None and lr.crs != msi.crs):
            raise GridError(f"the LR-HSI ({lr.path}) and the HR-MSI ({msi.path}) have different CRSs; {hint}")
        ratio = lr.res[0] / msi.res[0]
        scale = int(round(ratio))
        if scale < 1 or abs(ratio - scale) > 1e-6 * scale or abs(lr.res[1] / msi.res[1] - scale) > 1e-6 * scale:
            raise GridError(
                f"the LR-HSI pixel size {lr.res} is not an integer multiple of the HR-MSI's {msi.res}; {hint}"
            )
        col = (lr.transform.c - msi.transform.c) / msi.res[0]
        row = (msi.transform.f - lr.transform.f) / msi.res[1]
        offset = (int(round(col)), int(round(row)))
        if abs(col - offset[0]) > 1e-3 or abs(row - offset[1]) > 1e-3:
            raise GridError(f"the HR-MSI's pixel edges do not fall on the LR-HSI's; {hint}")
        if (offset[0] < 0 or offset[1] < 0 or offset[0] + lr.width * scale > msi.width
                or offset[1] + lr.height * scale > msi.height):
            raise GridError(f"the HR-MSI ({msi.path}) does not cover the LR-HSI's extent ({lr.path}); {hint}")
        return scale, offset

    @property
    def out_transform(self) -> Affine:
        """Affine transform of the output grid."""
        return self.lr_info.transform * Affine.scale(1.0 / self.scale)

    def read_lr(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """See :class:`~csakd_qgis.pipeline.PairSource`."""
        return read_window(self._lr, window)

    def read_msi(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """See :class:`~csakd_qgis.pipeline.PairSource`."""
        col, row = self.msi_offset
        return read_window(self._msi, Window(window.col_off + col, window.row_off + row,
                                             window.width, window.height))

    def close(self) -> None:
        """Close both datasets."""
        self._lr.close()
        self._msi.close()

    def __enter__(self) -> NestedPair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sample_scene(pair: NestedPair) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel sample of the scene on the LR grid from a regular grid of small windows.

    Returns
    -------
    lr : ``(C, N)`` float32 physical LR-HSI values (NaN = invalid)
    msi : ``(m, N)`` float32 MSI block means over each LR pixel's footprint
    valid : ``(N,)`` bool, both valid
    """
    size_x, size_y = min(SAMPLE_SIZE, pair.lr_width), min(SAMPLE_SIZE, pair.lr_height)
    xs = np.unique(np.linspace(0, pair.lr_width - size_x, SAMPLE_GRID).round().astype(int))
    ys = np.unique(np.linspace(0, pair.lr_height - size_y, SAMPLE_GRID).round().astype(int))
    s = pair.scale
    lrs, msis, valids = [], [], []
    for y in ys:
        for x in xs:
            lr, lr_valid = pair.read_lr(Window(int(x), int(y), size_x, size_y))
            msi, msi_valid = pair.read_msi(Window(int(x) * s, int(y) * s, size_x * s, size_y * s))
            valid = lr_valid & (block_mean(msi_valid.astype(np.float32), s) == 1.0)
            lrs.append(lr.reshape(lr.shape[0], -1))
            msis.append(block_mean(np.where(msi_valid, msi, 0.0), s).reshape(msi.shape[0], -1))
            valids.append(valid.ravel())
    return np.concatenate(lrs, axis=1), np.concatenate(msis, axis=1), np.concatenate(valids)


def measure_radiometry(lr: np.ndarray, msi: np.ndarray, valid: np.ndarray) -> Radiometry:
    """Robust levels and per-band fill values (mean of valid samples) from :func:`sample_scene`."""
    if not valid.any():
        raise InputError("the LR-HSI and HR-MSI have no valid pixel in common in the sampled area; "
                         "check their nodata values and that they overlap")
    lr_level = robust_level(lr[:, valid], name="LR-HSI")
    msi_level = robust_level(msi[:, valid], name="HR-MSI")
    return Radiometry(lr_level, msi_level, lr[:, valid].mean(axis=1).astype(np.float32),
                      msi[:, valid].mean(axis=1).astype(np.float32))


def _output_format(dtype: str, output_scale: Optional[float], lr: RasterInfo) -> Tuple[str, float]:
    if dtype not in DTYPES:
        raise InputError(f"unknown output dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    name = lr.dtype if dtype == "same" else dtype
    if output_scale is not None:
        return name, float(output_scale)
    is_int = np.issubdtype(np.dtype(name), np.integer)
    return name, (float(lr.scales[0]) if is_int and lr.scales else 1.0)


def fuse(lr_hsi: str, hr_msi: str, output: str, *, model=None, method: Union[str, FusionMethod] = "csakd",
         tile: int = 64,
         overlap: int = 8, batch_size: int = 4, device: str = "auto", threads: Optional[int] = None,
         shift_correction: bool = True, dtype: str = "float32", scale: Optional[int] = None,
         output_scale: Optional[float] = None, compress: Optional[str] = "zstd", cog: bool = False,
         overwrite: bool = False, block_width: int = BLOCK_WIDTH,
         reporter: Optional[Reporter] = None) -> FuseReport:
    """Fuse an LR-HSI with an HR-MSI into an HR-HSI GeoTIFF.

    Parameters
    ----------
    lr_hsi, hr_msi:
        Input rasters (any GDAL format) on nested grids (module docstring).
    output:
        Output GeoTIFF; written atomically (a partial file never appears
        under this name).
    model, method:
        See :func:`csakd_qgis.methods.make_method`; ``method`` may also be a
        ready :class:`~csakd_qgis.methods.FusionMethod` object (``model`` is
        then ignored).
    tile, overlap:
        Tile core size and overlap in LR pixels (:func:`csakd_qgis.tiling.plan_tiles`).
    batch_size:
        Tiles per network call.  On out-of-memory errors the batch, then the
        tile, is halved.
    device, threads:
        See :func:`csakd_qgis.devices.resolve_device` / ``set_threads``.
    shift_correction:
        Estimate and correct a sub-pixel shift between the inputs (needs
        :mod:`csakd_qgis.shift`; otherwise a note says it was not done).
    dtype:
        ``"float32"``, ``"int16"``, ``"uint16"`` or ``"same"`` (the LR-HSI's).
    scale:
        Expected HR/LR pixel-size ratio; checked against the inputs.
    output_scale:
        Physical value per stored unit for integer outputs (module docstring).
    compress, cog, overwrite:
        GeoTIFF compression, Cloud Optimized GeoTIFF conversion, replace an
        existing output.
    block_width:
        Output pixels per column block; bounds the memory of pending seams
        (:mod:`csakd_qgis.pipeline`).
    reporter:
        Progress and cancellation.

    Returns
    -------
    FuseReport

    Raises
    ------
    InputError, GridError, RasterReadError, RasterWriteError, CheckpointError, Cancelled
    """
    started = time.perf_counter()
    reporter = reporter or SILENT
    if os.path.exists(output) and not overwrite:
        raise InputError(f"output {output!r} exists; choose another name or allow overwriting (--overwrite)")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    torch_device = resolve_device(device)
    set_threads(threads)
    notes: List[str] = []
    with NestedPair(lr_hsi, hr_msi) as pair:
        if scale is not None and int(scale) != pair.scale:
            raise GridError(f"scale {scale} was asked for but the inputs' pixel-size ratio is {pair.scale}")
        out_dtype, out_scale = _output_format(dtype, output_scale, pair.lr_info)
        read_start = time.perf_counter()
        lr_sample, msi_sample, valid = sample_scene(pair)
        radiometry = measure_radiometry(lr_sample, msi_sample, valid)
        sample_seconds = time.perf_counter() - read_start
        if shift_correction:
            notes.append("shift correction was asked for but no shift estimator is installed; inputs used as given")
        if isinstance(method, str):
            fusion = make_method(method, model, device=torch_device, scale=pair.scale,
                                 lr_bands=pair.lr_info.bands, msi_bands=pair.msi_info.count,
                                 msi_wavelengths=[b.wavelength_nm for b in pair.msi_info.bands])
        elif method.scale != pair.scale:
            raise InputError(f"method {method.name!r} fuses at scale {method.scale}, the inputs at {pair.scale}")
        else:
            fusion = method
        if isinstance(fusion, GSAMethod):
            fusion.fit(lr_sample[:, valid] / radiometry.lr_level, msi_sample[:, valid] / radiometry.msi_level)
        reporter.update(0.02, "scene sampled")

        def notify(message: str) -> None:
            notes.append(message)
            reporter.update(0.02, message)

        while True:
            plan = plan_tiles(pair.lr_width, pair.lr_height, tile=tile, overlap=min(overlap, tile // 4),
                              halo=fusion.halo, scale=pair.scale)
            try:
                with RasterWriter(output, width=plan.out_width, height=plan.out_height,
                                  count=pair.lr_info.count, crs=pair.lr_info.crs, transform=pair.out_transform,
                                  dtype=out_dtype, bands=pair.lr_info.bands, scale=out_scale, compress=compress,
                                  cog=cog, overwrite=overwrite) as writer:
                    result = run_pipeline(pair, fusion, plan, writer, radiometry, batch_size=batch_size,
                                          block_width=block_width, reporter=reporter.phase(0.02, 1.0), notify=notify)
                break
            except TileTooLarge:
                if tile // 2 < MIN_TILE:
                    raise
                tile //= 2
                notify(f"out of memory with single tiles: tile size reduced to {tile} LR pixels")
    timings = result.timings
    crs = pair.lr_info.crs
    return FuseReport(
        output=str(output),
        grid=Grid(crs.to_wkt() if crs is not None else "", tuple(pair.out_transform)[:6],
                  plan.out_width, plan.out_height),
        scale=pair.scale, shift=(0.0, 0.0), shift_corrected=False,
        tiles_total=result.tiles, tiles_skipped=result.skipped, tiles_recomputed=result.recomputed,
        tile_size=tile, batch_size=batch_size, device=str(torch_device), method=fusion.name,
        model=str(model) if model is not None else fusion.name,
        timings={"read": timings.read + sample_seconds, "infer": timings.infer, "blend": timings.blend,
                 "write": timings.write, "total": time.perf_counter() - started},
        notes=tuple(notes),
    )

