"""Planning a fusion: everything decided before the first tile is read, as a picklable :class:`FusionPlan`.

:func:`prepare` plans the output and LR grids (:func:`csakd_qgis.geo.grid.plan_grids`),
estimates the LR-HSI's sub-pixel shift (:func:`csakd_qgis.geo.coregister.measure_shift`),
measures the scene's radiometry on a sample (:mod:`csakd_qgis.fusion.sample`),
builds and fits the method and chooses the halo and the output format.  The
distributed mode (:mod:`csakd_qgis.distributed`) computes the plan once on its
client and sends it to every worker, so all parts of the output are
normalised alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ContextManager, Optional, Tuple, Union

import numpy as np
import torch
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.methods import NETWORK_METHODS, FusionMethod, GSAMethod, make_method, model_scales
from csakd_qgis.fusion.pipeline import PipelineResult
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.report import FuseReport, Grid
from csakd_qgis.fusion.sample import measure_radiometry, sample_scene
from csakd_qgis.fusion.tiling import TilePlan, plan_tiles
from csakd_qgis.geo.coregister import AlignedPair, measure_shift, open_aligned
from csakd_qgis.geo.grid import GridPlan, plan_grids
from csakd_qgis.io.bands import RasterInfo
from csakd_qgis.io.read import BLOCK_CACHE_MB, read_info
from csakd_qgis.io.write import RasterWriter
from csakd_qgis.options import OUTPUT_BLOCK, FuseOptions
from csakd_qgis.progress import SILENT, Reporter

#: Smallest reliable shift (LR pixels, on either axis) that is corrected.  Correcting reads every LR
#: tile through a shifted, resampling warp; the estimates' spread on aligned pairs is about 0.02 px.
MIN_SHIFT_CORRECTION = 0.05


#: Largest GDAL block cache (MB) :meth:`FusionPlan.block_cache_mb` asks for.
MAX_BLOCK_CACHE_MB = 1024


#: Default LR context (pixels per tile side) for networks; see the module docstring.
NETWORK_HALO = 4


def tile_halo(method: FusionMethod, halo: Union[int, str, None]) -> int:
    """LR context per tile side: ``halo`` itself, the method's bound (``"exact"``) or the default (None).

    The default is the method's own halo, capped at :data:`NETWORK_HALO`
    for a network (:data:`~csakd_qgis.fusion.methods.NETWORK_METHODS`: torch or onnxruntime).
    ``halo`` is checked by :class:`~csakd_qgis.options.FuseOptions`.
    """
    if halo is None:
        return min(method.halo, NETWORK_HALO) if isinstance(method, NETWORK_METHODS) else method.halo
    return method.halo if halo == "exact" else int(halo)


def _output_format(options: FuseOptions, lr: RasterInfo) -> Tuple[str, float]:
    """``(stored dtype, physical value per stored unit)`` of the output (see :mod:`csakd_qgis.fusion.engine`)."""
    name = lr.dtype if options.dtype == "same" else options.dtype
    if options.output_scale is not None:
        return name, float(options.output_scale)
    is_int = np.issubdtype(np.dtype(name), np.integer)
    return name, (float(lr.scales[0]) if is_int and lr.scales else 1.0)


def _estimate_shift(lr_hsi: str, hr_msi: str, plan: GridPlan) -> Tuple[Tuple[float, float], bool, str]:
    """``((dx, dy), reliable, message)`` measured on a central sample; unreliable when it cannot be measured."""
    try:
        with open_aligned(lr_hsi, hr_msi, plan) as pair:
            estimate = measure_shift(pair)
    except InputError as error:
        return (0.0, 0.0), False, f"shift not estimated: {error}"
    return (estimate.dx, estimate.dy), estimate.reliable, estimate.message


@dataclass(frozen=True)
class FusionPlan:
    """What a fusion decides before it reads a tile; plain, picklable data.

    Attributes
    ----------
    lr_hsi, hr_msi:
        The input rasters (paths GDAL opens).
    grids:
        Output and LR grids (:func:`csakd_qgis.geo.grid.plan_grids`).
    lr_info, msi_info:
        The inputs' sizes and band metadata (the output takes the LR-HSI's bands).
    shift:
        LR-HSI offset ``(dx, dy)`` in LR pixels applied to its reads (0, 0
        when not estimated, not reliable, below :data:`MIN_SHIFT_CORRECTION`
        or correction is off).
    shift_measured:
        The reliable estimate ``(dx, dy)`` (0, 0 when not reliable), reported
        whether or not it was applied.
    shift_reliable, shift_message:
        Whether the estimate was reliable, and what it said.
    radiometry:
        Scene-wide levels and fill values (:func:`measure_radiometry`).
    halo:
        LR context per tile side (:func:`tile_halo`).
    dtype, output_scale:
        Stored output type and the physical value of one stored unit.
    method_name, model_name:
        Reported method and model (the checkpoint's name; empty for bicubic/GSA).
    notes:
        What was reprojected, resampled or chosen, for the user.
    sample_seconds:
        Time spent reading the radiometry sample.
    """

    lr_hsi: str
    hr_msi: str
    grids: GridPlan
    lr_info: RasterInfo
    msi_info: RasterInfo
    shift: Tuple[float, float]
    shift_measured: Tuple[float, float]
    shift_reliable: bool
    shift_message: str
    radiometry: Radiometry
    halo: int
    dtype: str
    output_scale: float
    method_name: str
    model_name: str
    notes: Tuple[str, ...]
    sample_seconds: float

    def open_pair(self) -> ContextManager[AlignedPair]:
        """The inputs on the plan's grids, shift applied (one pair per thread, see :func:`open_aligned`)."""
        return open_aligned(self.lr_hsi, self.hr_msi, self.grids, self.shift)

    def tiles(self, tile: int, overlap: int) -> TilePlan:
        """Tile plan of the LR grid: cores of ``tile`` LR px overlapping by ``overlap``, with the plan's halo."""
        return plan_tiles(self.grids.lr.width, self.grids.lr.height, tile=tile, overlap=overlap,
                          halo=self.halo, scale=self.grids.scale)

    def block_cache_mb(self, tiles: TilePlan, block_width: int) -> int:
        """GDAL block cache (MB) for running ``tiles`` in column blocks of ``block_width`` output pixels.

        :data:`~csakd_qgis.io.read.BLOCK_CACHE_MB` plus, for each input,
        the decoded blocks (all bands) that one row of tiles of a column
        block can touch: a column block and a tile read on either side
        across, one tile read down, plus a block each way
        (:meth:`~csakd_qgis.io.bands.RasterInfo.block_row_bytes`; the MSI
        in output pixels).  With less, every tile decodes again the input
        blocks its neighbour just decoded: a 1000-pixel-wide, 224-band
        EnMAP scene in 256-pixel ZSTD blocks (115 MB per block row) spent
        minutes per column block decompressing under the 64 MB cache.
        The size depends on the widths, the bands and the tile, not on the
        raster's height or length, so memory stays flat; it is capped at
        :data:`MAX_BLOCK_CACHE_MB`.
        """
        s = self.grids.scale
        read_h, read_w = tiles.read_shape
        span = block_width // s + 2 * read_w
        needed = (self.lr_info.block_row_bytes(span, read_h)
                  + self.msi_info.block_row_bytes(span * s, read_h * s))
        return min(BLOCK_CACHE_MB + -(-needed // 2**20), MAX_BLOCK_CACHE_MB)

    def writer(self, path: str, *, window: Optional[Window] = None, compress: Optional[str] = "zstd",
               blocksize: int = OUTPUT_BLOCK, cog: bool = False, overwrite: bool = False) -> RasterWriter:
        """An atomic GeoTIFF writer for the output grid or one HR ``window`` of it, with the output's metadata."""
        grid = self.grids.output
        window = window or Window(0, 0, grid.width, grid.height)
        return RasterWriter(path, width=int(window.width), height=int(window.height), count=self.lr_info.count,
                            crs=grid.crs, transform=grid.window_transform(window), dtype=self.dtype,
                            bands=self.lr_info.bands, scale=self.output_scale, compress=compress,
                            blocksize=blocksize, cog=cog, overwrite=overwrite)

    def report(self, output: str, result: PipelineResult, *, tile: int, device: str, seconds: float,
               notes: Tuple[str, ...]) -> FuseReport:
        """The :class:`FuseReport` of a run of this plan that ended with ``result`` after ``seconds``."""
        grid, t = self.grids.output, result.timings
        return FuseReport(
            output=str(output), grid=Grid(grid.crs.to_wkt(), tuple(grid.transform)[:6], grid.width, grid.height),
            scale=self.grids.scale, shift=self.shift_measured, shift_corrected=self.shift != (0.0, 0.0),
            shift_reliable=self.shift_reliable, shift_message=self.shift_message,
            tiles_total=result.tiles, tiles_skipped=result.skipped, tiles_recomputed=result.recomputed,
            tile_size=tile, halo=self.halo, batch_size=result.batch_size, device=device, method=self.method_name,
            model=self.model_name,
            timings={"read": t.read + self.sample_seconds, "infer": t.infer, "blend": t.blend, "write": t.write,
                     "total": seconds},
            notes=notes,
        )


def prepare(lr_hsi: str, hr_msi: str, *, model: object = None, method: Union[str, FusionMethod] = "csakd",
            device: Union[str, torch.device] = "cpu", options: Optional[FuseOptions] = None,
            reporter: Reporter = SILENT) -> Tuple[FusionPlan, FusionMethod]:
    """Plan a fusion: grids, shift, radiometry, the method (GSA fitted) and the halo; reads samples only.

    Parameters are those of :func:`~csakd_qgis.fusion.engine.fuse`
    (``device``: a name or ``torch.device`` the method's network is loaded
    on, instead of ``options.device``).  Run it under
    :func:`~csakd_qgis.io.read.gdal_block_cache` (:func:`fuse` does).

    Returns
    -------
    plan : FusionPlan
        Picklable; the same for every tile and every part of the output.
    method : FusionMethod
        Ready to predict (a network is loaded on ``device``).

    Raises
    ------
    InputError, GridError, RasterReadError, CheckpointError, ModelMismatchError, Cancelled
    """
    options = options or FuseOptions()
    lr_info, msi_info = read_info(lr_hsi), read_info(hr_msi)
    scales = model_scales(model, method) if isinstance(method, str) else (method.scale,)
    grids = plan_grids(lr_info, msi_info, scale=options.scale, model_scales=scales)
    out_dtype, out_scale = _output_format(options, lr_info)
    shift, reliable, message = (0.0, 0.0), False, "not estimated (shift correction off)."
    if options.shift_correction:
        reporter.update(0.0, "estimating the shift between the inputs")
        shift, reliable, message = _estimate_shift(lr_hsi, hr_msi, grids)
    measured = shift if reliable else (0.0, 0.0)
    applied = measured if max(abs(measured[0]), abs(measured[1])) >= MIN_SHIFT_CORRECTION else (0.0, 0.0)
    if reliable and applied == (0.0, 0.0):
        message += f" Below {MIN_SHIFT_CORRECTION} LR px on both axes: left uncorrected (a warped read of every " \
                   "tile would change the output less than the estimate's own uncertainty)."
    read_start = time.perf_counter()
    with open_aligned(lr_hsi, hr_msi, grids, applied) as pair:
        lr_sample, msi_sample = sample_scene(pair)
    radiometry = measure_radiometry(lr_sample, msi_sample)
    sample_seconds = time.perf_counter() - read_start
    if isinstance(method, str):
        fusion = make_method(method, model, device=device, scale=grids.scale, lr_bands=lr_info.bands,
                             msi_bands=msi_info.count, msi_wavelengths=[b.wavelength_nm for b in msi_info.bands],
                             backend=options.backend, precision=options.precision)
    else:
        fusion = method
    if fusion.scale != grids.scale:
        raise InputError(f"method {fusion.name!r} fuses at scale {fusion.scale}, the inputs at {grids.scale}")
    if isinstance(fusion, GSAMethod):
        fusion.fit(lr_sample / radiometry.lr_level, msi_sample / radiometry.msi_level,
                   [b.good for b in lr_info.bands])
    plan = FusionPlan(lr_hsi=str(lr_hsi), hr_msi=str(hr_msi), grids=grids, lr_info=lr_info, msi_info=msi_info,
                      shift=applied, shift_measured=measured, shift_reliable=reliable, shift_message=message,
                      radiometry=radiometry,
                      halo=tile_halo(fusion, options.halo), dtype=out_dtype, output_scale=out_scale,
                      method_name=fusion.name, model_name=getattr(fusion, "model_name", ""),
                      notes=tuple(grids.notes), sample_seconds=sample_seconds)
    reporter.update(0.02, "scene sampled")
    return plan, fusion
