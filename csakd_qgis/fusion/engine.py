"""The public fusion entry point, :func:`fuse`.

``fuse`` plans the output and LR grids (:func:`csakd_qgis.geo.grid.plan_grids`:
any CRSs, extents and resolution ratios), optionally estimates the LR-HSI's
sub-pixel shift relative to the HR-MSI (:func:`csakd_qgis.geo.coregister.measure_shift`),
measures the scene's radiometry on a sample, builds the fusion method and
the tile plan, and runs the reader -> compute -> writer pipeline
(:mod:`csakd_qgis.fusion.pipeline`) into an atomically published GeoTIFF.
Everything decided before the first tile is read (grids, shift,
radiometry, halo, output format) comes from :func:`prepare` as a
picklable :class:`FusionPlan`, which the distributed mode
(:mod:`csakd_qgis.distributed`) computes once on its client and sends to
every worker, so all parts of the output are normalised alike.  Inputs
are read through :func:`csakd_qgis.geo.coregister.open_aligned` (directly when
their pixels already are the plan's, else warped on the fly); the pipeline's
reader thread opens its own pair.

Grids
-----
The output grid is ``GridPlan.output`` (the HR-MSI's pixels over the overlap
of both footprints, or ``LR res / scale`` when the ratio is not an integer);
the LR-HSI is read on ``GridPlan.output.coarsen(scale)``.  For a network
the scale is the model's; bicubic and GSA take any integer.  The plan's notes
(what was reprojected or resampled) are in the report.

Memory and writing
------------------
Peak memory is set by the tile size, the batch size, the column-block width
and the band count, not by the raster size (:mod:`csakd_qgis.fusion.pipeline`).
The pipeline writes whole, block-aligned strips, so GDAL never holds a
partly written block.  The shift estimate and radiometry sample run with
GDAL's process-wide block cache at a small fixed size
(:func:`csakd_qgis.io.raster.gdal_block_cache`,
:data:`~csakd_qgis.io.raster.BLOCK_CACHE_MB`), the tiles with one sized for
the input blocks a row of tiles touches (:meth:`FusionPlan.block_cache_mb`),
instead of GDAL's default of 5 % of the RAM; the previous size is restored
afterwards.  Under the default,
the sample windows alone left hundreds of MB of decoded input blocks, more
on a larger raster (``docs/pipeline.md``).

Halo
----
``halo=None`` reads :data:`NETWORK_HALO` LR pixels of context around each
tile for a network (capped by its receptive-field bound), the exact 2 for
bicubic and GSA.  ``halo="exact"`` uses the method's receptive-field bound
(:func:`csakd_qgis.fusion.methods.network_halo`: 36 LR px for the project student
at scale 4), which makes tiles identical to whole-image inference but reads
far more pixels than it computes; ``docs/pipeline.md`` gives the measured
trade-off.

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
from typing import ContextManager, Dict, List, Optional, Tuple, Union

import numpy as np
import rasterio
from rasterio.windows import Window

from csakd_qgis.devices import TileTooLarge, resolve_device, set_threads
from csakd_qgis.errors import InputError, RasterWriteError
from csakd_qgis.fusion.methods import NETWORK_METHODS, FusionMethod, GSAMethod, make_method, model_scales
from csakd_qgis.fusion.pipeline import BLOCK_WIDTH, OUT_BLOCK, PipelineResult, Radiometry, run_pipeline
from csakd_qgis.fusion.radiometry import robust_level
from csakd_qgis.fusion.tiling import TilePlan, plan_tiles
from csakd_qgis.geo.coregister import AlignedPair, measure_shift, open_aligned
from csakd_qgis.geo.grid import GridPlan, plan_grids
from csakd_qgis.io.raster import BLOCK_CACHE_MB, RasterInfo, RasterWriter, gdal_block_cache, read_info
from csakd_qgis.progress import SILENT, Reporter

DTYPES = ("float32", "int16", "uint16", "same")

#: Smallest tile (LR pixels) the out-of-memory policy goes down to.
MIN_TILE = 8

#: Smallest reliable shift (LR pixels, on either axis) that is corrected.  Correcting reads every LR
#: tile through a shifted, resampling warp; the estimates' spread on aligned pairs is about 0.02 px.
MIN_SHIFT_CORRECTION = 0.05

#: Largest GDAL block cache (MB) :meth:`FusionPlan.block_cache_mb` asks for.
MAX_BLOCK_CACHE_MB = 1024

#: Largest tile core (LR pixels) and batch (tiles) a run accepts: the QGIS algorithm's limits.
MAX_TILE, MAX_BATCH = 4096, 256

#: LR pixels per side of each sample window, and the number of windows per axis.
SAMPLE_SIZE, SAMPLE_GRID = 32, 4

#: Side (pixels) of the output GeoTIFF's blocks.
OUTPUT_BLOCK = OUT_BLOCK

#: Default LR context (pixels per tile side) for networks; see the module docstring.
NETWORK_HALO = 4


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

    ``shift`` is the LR-HSI's measured offset relative to the MSI in LR
    pixels ``(dx, dy)``, +x east, +y south (0, 0 when not estimated or not
    reliable); ``shift_corrected`` says whether it was applied.
    ``method`` is ``student``, ``teacher``, ``bicubic`` or ``gsa``; ``model``
    the checkpoint name (empty for bicubic/GSA).  ``batch_size`` is the one
    used at the end (after out-of-memory halving).  ``timings`` are seconds
    per stage (``read``, ``infer``, ``blend``, ``write`` overlap in time;
    ``total`` is wall-clock).
    """

    output: str
    grid: Grid
    scale: int
    shift: Tuple[float, float]
    shift_corrected: bool
    shift_reliable: bool
    shift_message: str
    tiles_total: int
    tiles_skipped: int
    tiles_recomputed: int
    tile_size: int
    halo: int
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

    def summary_lines(self) -> List[str]:
        """One human-readable line each: grid and CRS, scale, shift, tiles, device, timings, notes."""
        crs = rasterio.crs.CRS.from_wkt(self.grid.crs_wkt) if self.grid.crs_wkt else None
        crs_text = "no CRS" if crs is None else (f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_string())
        res = self.grid.transform[0]
        t = self.timings
        model = f" ({self.model})" if self.model else ""
        lines = [
            f"output {self.output}: {self.grid.width} x {self.grid.height} pixels of {res:.6g} in {crs_text}",
            f"scale {self.scale} (each LR-HSI pixel -> {self.scale} x {self.scale} output pixels)",
            f"shift: {self.shift_message}" + (" Corrected." if self.shift_corrected else ""),
            f"tiles: {self.tiles_total} of {self.tile_size} LR px (halo {self.halo}), {self.tiles_skipped} "
            f"empty, {self.tiles_recomputed} recomputed at column-block seams",
            f"method {self.method}{model} on {self.device}, batch size {self.batch_size}",
            f"time {t['total']:.1f} s (read {t['read']:.1f}, infer {t['infer']:.1f}, blend {t['blend']:.1f}, "
            f"write {t['write']:.1f} s; stages overlap)",
        ]
        return lines + [f"note: {note}" for note in self.notes]


def sample_windows(plan: GridPlan) -> List[Window]:
    """A regular :data:`SAMPLE_GRID` x :data:`SAMPLE_GRID` grid of LR windows, at most :data:`SAMPLE_SIZE` wide."""
    width, height = plan.lr.width, plan.lr.height
    size_x, size_y = min(SAMPLE_SIZE, width), min(SAMPLE_SIZE, height)
    xs = np.unique(np.linspace(0, width - size_x, SAMPLE_GRID).round().astype(int))
    ys = np.unique(np.linspace(0, height - size_y, SAMPLE_GRID).round().astype(int))
    return [Window(int(x), int(y), size_x, size_y) for y in ys for x in xs]


def sample_scene(pair: AlignedPair) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel sample of the scene on the LR grid (:func:`sample_windows`).

    Returns
    -------
    lr : ``(C, 1, N)`` float32 physical LR-HSI values, NaN where either input is invalid
    msi : ``(m, 1, N)`` float32 HR-MSI averaged over each LR pixel's footprint, NaN likewise
    """
    lrs, msis = [], []
    for window in sample_windows(pair.plan):
        lr, lr_valid = pair.read_lr(window)
        msi, msi_valid = pair.read_msi_lr(window)
        valid = lr_valid & msi_valid
        lrs.append(np.where(valid, lr, np.nan).reshape(lr.shape[0], -1))
        msis.append(np.where(valid, msi, np.nan).reshape(msi.shape[0], -1))
    return np.concatenate(lrs, axis=1)[:, None], np.concatenate(msis, axis=1)[:, None]


def measure_radiometry(lr: np.ndarray, msi: np.ndarray) -> Radiometry:
    """Robust levels and per-band fill values (mean of valid samples) from :func:`sample_scene`.

    A sample pixel counts where the HR-MSI is valid (:func:`sample_scene`
    sets both inputs to NaN where either is invalid); bad LR-HSI bands that
    hold no value there get a fill value of 0.
    """
    valid = np.isfinite(msi).all(axis=0)
    if not valid.any():
        raise InputError("the LR-HSI and HR-MSI have no valid pixel in common in the sampled area; "
                         "check their nodata values and that they overlap")
    lr_px, msi_px = lr[:, valid], msi[:, valid]
    known = np.isfinite(lr_px)
    lr_fill = np.where(known, lr_px, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    return Radiometry(robust_level(lr_px, name="LR-HSI"), robust_level(msi_px, name="HR-MSI"),
                      lr_fill.astype(np.float32), msi_px.mean(axis=1).astype(np.float32))


def tile_halo(method: FusionMethod, halo: Union[int, str, None]) -> int:
    """LR context per tile side: ``halo`` itself, the method's bound (``"exact"``) or the default (None).

    The default is the method's own halo, capped at :data:`NETWORK_HALO`
    for a network (:data:`~csakd_qgis.fusion.methods.NETWORK_METHODS`: torch or onnxruntime).

    Raises
    ------
    InputError
        ``halo`` is negative or neither an integer, ``"exact"`` nor None.
    """
    if halo is None:
        return min(method.halo, NETWORK_HALO) if isinstance(method, NETWORK_METHODS) else method.halo
    if halo == "exact":
        return method.halo
    try:
        value = int(halo)
    except (TypeError, ValueError):
        value = -1
    if value < 0 or value != halo:
        raise InputError(f"halo must be a number of LR pixels >= 0 or 'exact', got {halo!r}")
    return value


def _output_format(dtype: str, output_scale: Optional[float], lr: RasterInfo) -> Tuple[str, float]:
    if dtype not in DTYPES:
        raise InputError(f"unknown output dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    name = lr.dtype if dtype == "same" else dtype
    if output_scale is not None:
        return name, float(output_scale)
    is_int = np.issubdtype(np.dtype(name), np.integer)
    return name, (float(lr.scales[0]) if is_int and lr.scales else 1.0)


def check_output(output: str, inputs: Tuple[str, ...], overwrite: bool) -> None:
    """Refuse an output that exists (without ``overwrite``), is an input, or cannot be created; before any compute.

    Raises
    ------
    InputError
        ``output`` exists and ``overwrite`` is False, or it names an input.
    RasterWriteError
        It is a folder, or its folder does not exist or is not writable.
    """
    if os.path.isdir(output):
        raise RasterWriteError(f"output {output!r} is a folder; give a file name, e.g. "
                               f"{os.path.join(output, 'fused.tif')!r}")
    target = os.path.realpath(output)
    for name in inputs:
        if os.path.exists(name) and os.path.realpath(name) == target:
            raise InputError(f"output {output!r} is also an input; choose another output name")
    if os.path.exists(output) and not overwrite:
        raise InputError(f"output {output!r} exists; choose another name or allow overwriting (--overwrite)")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise RasterWriteError(f"cannot write {output!r}: folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RasterWriteError(f"cannot write {output!r}: folder {folder!r} is not writable; choose another")


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
        """Tile plan of the LR grid: cores of ``tile`` LR px, overlap capped at ``tile // 4``, the plan's halo."""
        return plan_tiles(self.grids.lr.width, self.grids.lr.height, tile=tile, overlap=min(overlap, tile // 4),
                          halo=self.halo, scale=self.grids.scale)

    def block_cache_mb(self, tiles: TilePlan, block_width: int) -> int:
        """GDAL block cache (MB) for running ``tiles`` in column blocks of ``block_width`` output pixels.

        :data:`~csakd_qgis.io.raster.BLOCK_CACHE_MB` plus, for each input,
        the decoded blocks (all bands) that one row of tiles of a column
        block can touch: a column block and a tile read on either side
        across, one tile read down, plus a block each way
        (:meth:`~csakd_qgis.io.raster.RasterInfo.block_row_bytes`; the MSI
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


def prepare(lr_hsi: str, hr_msi: str, *, model=None, method: Union[str, FusionMethod] = "csakd",
            device="cpu", shift_correction: bool = True, dtype: str = "float32", scale: Optional[int] = None,
            output_scale: Optional[float] = None, halo: Union[int, str, None] = None, backend: str = "auto",
            reporter: Reporter = SILENT) -> Tuple[FusionPlan, FusionMethod]:
    """Plan a fusion: grids, shift, radiometry, the method (GSA fitted) and the halo; reads samples only.

    Parameters are those of :func:`fuse` (``device``: a name or
    ``torch.device`` the method's network is loaded on).  Run it under
    :func:`~csakd_qgis.io.raster.gdal_block_cache` (:func:`fuse` does).

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
    lr_info, msi_info = read_info(lr_hsi), read_info(hr_msi)
    scales = model_scales(model, method) if isinstance(method, str) else (method.scale,)
    grids = plan_grids(lr_info, msi_info, scale=scale, model_scales=scales)
    out_dtype, out_scale = _output_format(dtype, output_scale, lr_info)
    shift, reliable, message = (0.0, 0.0), False, "not estimated (shift correction off)."
    if shift_correction:
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
                             backend=backend)
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
                      halo=tile_halo(fusion, halo), dtype=out_dtype, output_scale=out_scale,
                      method_name=fusion.name, model_name=getattr(fusion, "model_name", ""),
                      notes=tuple(grids.notes), sample_seconds=sample_seconds)
    reporter.update(0.02, "scene sampled")
    return plan, fusion


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size below one or above :data:`MAX_BATCH` (:class:`InputError`)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise InputError(f"batch size must be between 1 and {MAX_BATCH} tiles (--batch-size), got {batch_size}")


def check_tile_size(tile: int, overlap: int) -> None:
    """Refuse a tile size below one or above :data:`MAX_TILE`, or a negative overlap (:class:`InputError`).

    Checked before any input is read: a larger tile would hold a large part
    of the raster in memory at once.
    """
    if not 1 <= tile <= MAX_TILE:
        raise InputError(f"tile size must be between 1 and {MAX_TILE} LR pixels (--tile-size), got {tile}")
    if overlap < 0:
        raise InputError(f"tile overlap must be >= 0 LR pixels (--overlap), got {overlap}")


def fuse(lr_hsi: str, hr_msi: str, output: str, *, model=None, method: Union[str, FusionMethod] = "csakd",
         tile: int = 64, overlap: int = 8, batch_size: int = 4, device: str = "auto", threads: Optional[int] = None,
         shift_correction: bool = True, dtype: str = "float32", scale: Optional[int] = None,
         output_scale: Optional[float] = None, compress: Optional[str] = "zstd", cog: bool = False,
         overwrite: bool = False, halo: Union[int, str, None] = None, block_width: int = BLOCK_WIDTH,
         output_block: int = OUTPUT_BLOCK, backend: str = "auto", reporter: Optional[Reporter] = None) -> FuseReport:
    """Fuse an LR-HSI with an HR-MSI into an HR-HSI GeoTIFF.

    Parameters
    ----------
    lr_hsi, hr_msi:
        Input rasters (any GDAL format, any CRS with an overlap; see
        :func:`csakd_qgis.geo.grid.plan_grids`).
    output:
        Output GeoTIFF; written atomically (a partial file never appears
        under this name).  Checked before any compute (:func:`check_output`).
    model, method:
        See :func:`csakd_qgis.fusion.methods.make_method` (``model`` None or
        ``"auto"`` selects an installed model); ``method`` may also be a
        ready :class:`~csakd_qgis.fusion.methods.FusionMethod` object (``model`` is
        then ignored).
    tile, overlap:
        Tile core size and overlap in LR pixels (:func:`csakd_qgis.fusion.tiling.plan_tiles`).
    batch_size:
        Tiles per network call.  On out-of-memory errors the batch, then the
        tile, is halved.
    device, threads:
        See :func:`csakd_qgis.devices.resolve_device` / ``set_threads``.
    shift_correction:
        Estimate the LR-HSI's sub-pixel shift relative to the HR-MSI on a
        central sample and correct it when the estimate is reliable.
    dtype:
        ``"float32"``, ``"int16"``, ``"uint16"`` or ``"same"`` (the LR-HSI's).
    scale:
        HR/LR pixel-size ratio to use; None derives it (the model's for a network).
    output_scale:
        Physical value per stored unit for integer outputs (module docstring).
    compress, cog, overwrite:
        GeoTIFF compression, Cloud Optimized GeoTIFF conversion, replace an
        existing output.
    halo:
        LR context per tile side: a number of LR pixels, ``"exact"`` (the
        method's receptive-field bound) or None (:func:`tile_halo`; module
        docstring).
    block_width:
        Output pixels per column block (rounded down to a multiple of
        ``output_block``); sets the writer's memory (:mod:`csakd_qgis.fusion.pipeline`).
    output_block:
        Side of the output GeoTIFF's blocks in pixels (a multiple of 16).
    backend:
        Network inference with ``"torch"``, ``"onnxruntime"`` or ``"auto"``
        (onnxruntime for an ``.onnx`` model, torch otherwise); see
        :func:`csakd_qgis.fusion.methods.make_method`.
    reporter:
        Progress and cancellation.

    Returns
    -------
    FuseReport

    Raises
    ------
    InputError, GridError, RasterReadError, RasterWriteError, CheckpointError, ModelMismatchError, Cancelled
    """
    started = time.perf_counter()
    reporter = reporter or SILENT
    check_output(output, (lr_hsi, hr_msi), overwrite)
    check_batch_size(batch_size)
    check_tile_size(tile, overlap)
    torch_device = resolve_device(device)
    set_threads(threads)
    # the shift and radiometry samples under a small block cache: GDAL's default (5 % of the RAM) keeps
    # each input block they touch, which grows with the raster; the tiles then under one sized for them
    with gdal_block_cache(BLOCK_CACHE_MB):
        plan, fusion = prepare(lr_hsi, hr_msi, model=model, method=method, device=torch_device,
                               shift_correction=shift_correction, dtype=dtype, scale=scale,
                               output_scale=output_scale, halo=halo, backend=backend, reporter=reporter)
    notes: List[str] = list(plan.notes)

    def notify(text: str) -> None:
        notes.append(text)
        reporter.update(0.02, text)

    while True:
        tiles = plan.tiles(tile, overlap)
        try:
            with gdal_block_cache(plan.block_cache_mb(tiles, block_width)), \
                    plan.writer(output, compress=compress, blocksize=output_block, cog=cog,
                                overwrite=overwrite) as writer:
                result = run_pipeline(plan.open_pair, fusion, tiles, writer, plan.radiometry,
                                      batch_size=batch_size, block_width=block_width, out_block=output_block,
                                      reporter=reporter.phase(0.02, 1.0), notify=notify)
            break
        except TileTooLarge:
            if tile // 2 < MIN_TILE:
                raise
            tile //= 2
            notify(f"out of memory with single tiles: tile size reduced to {tile} LR pixels")
    return plan.report(output, result, tile=tile, device=str(torch_device),
                       seconds=time.perf_counter() - started, notes=tuple(notes))
