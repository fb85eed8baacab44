"""The public fusion entry point, :func:`fuse`.

``fuse`` plans the output and LR grids (:func:`csakd_qgis.grid.plan_grids`:
any CRSs, extents and resolution ratios), optionally estimates the LR-HSI's
sub-pixel shift relative to the HR-MSI (:func:`csakd_qgis.coregister.measure_shift`),
measures the scene's radiometry on a sample, builds the fusion method and
the tile plan, and runs the reader -> compute -> writer pipeline
(:mod:`csakd_qgis.pipeline`) into an atomically published GeoTIFF.  Inputs
are read through :func:`csakd_qgis.coregister.open_aligned` (directly when
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
and the band count, not by the raster size (:mod:`csakd_qgis.pipeline`).
The pipeline writes whole, block-aligned strips, so GDAL never holds a
partly written block.  The whole run, shift estimate and radiometry sample
included, gives GDAL's process-wide block cache a small fixed size
(:func:`csakd_qgis.raster_io.gdal_block_cache`,
:data:`~csakd_qgis.raster_io.BLOCK_CACHE_MB`) instead of its default of 5 %
of the RAM, and restores the previous size afterwards: under the default,
the sample windows alone left hundreds of MB of decoded input blocks, more
on a larger raster (``docs/pipeline.md``).

Halo
----
``halo=None`` reads :data:`NETWORK_HALO` LR pixels of context around each
tile for a network (capped by its receptive-field bound), the exact 2 for
bicubic and GSA.  ``halo="exact"`` uses the method's receptive-field bound
(:func:`csakd_qgis.methods.network_halo`: 36 LR px for the project student
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
from functools import partial
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import rasterio
from rasterio.windows import Window

from .coregister import AlignedPair, measure_shift, open_aligned
from .devices import TileTooLarge, resolve_device, set_threads
from .errors import InputError, RasterWriteError
from .grid import GridPlan, plan_grids
from .methods import FusionMethod, GSAMethod, NetworkMethod, make_method, model_scales
from .normalisation import robust_level
from .pipeline import BLOCK_WIDTH, OUT_BLOCK, Radiometry, run_pipeline
from .progress import SILENT, Reporter
from .raster_io import BLOCK_CACHE_MB, RasterInfo, RasterWriter, gdal_block_cache, read_info
from .tiling import plan_tiles

DTYPES = ("float32", "int16", "uint16", "same")

#: Smallest tile (LR pixels) the out-of-memory policy goes down to.
MIN_TILE = 8

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
    for a :class:`~csakd_qgis.methods.NetworkMethod`.

    Raises
    ------
    InputError
        ``halo`` is negative or neither an integer, ``"exact"`` nor None.
    """
    if halo is None:
        return min(method.halo, NETWORK_HALO) if isinstance(method, NetworkMethod) else method.halo
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
        Its folder does not exist or is not writable.
    """
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


def fuse(lr_hsi: str, hr_msi: str, output: str, *, model=None, method: Union[str, FusionMethod] = "csakd",
         tile: int = 64, overlap: int = 8, batch_size: int = 4, device: str = "auto", threads: Optional[int] = None,
         shift_correction: bool = True, dtype: str = "float32", scale: Optional[int] = None,
         output_scale: Optional[float] = None, compress: Optional[str] = "zstd", cog: bool = False,
         overwrite: bool = False, halo: Union[int, str, None] = None, block_width: int = BLOCK_WIDTH,
         output_block: int = OUTPUT_BLOCK, reporter: Optional[Reporter] = None) -> FuseReport:
    """Fuse an LR-HSI with an HR-MSI into an HR-HSI GeoTIFF.

    Parameters
    ----------
    lr_hsi, hr_msi:
        Input rasters (any GDAL format, any CRS with an overlap; see
        :func:`csakd_qgis.grid.plan_grids`).
    output:
        Output GeoTIFF; written atomically (a partial file never appears
        under this name).  Checked before any compute (:func:`check_output`).
    model, method:
        See :func:`csakd_qgis.methods.make_method` (``model`` None or
        ``"auto"`` selects an installed model); ``method`` may also be a
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
        ``output_block``); sets the writer's memory (:mod:`csakd_qgis.pipeline`).
    output_block:
        Side of the output GeoTIFF's blocks in pixels (a multiple of 16).
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
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    torch_device = resolve_device(device)
    set_threads(threads)
    lr_info, msi_info = read_info(lr_hsi), read_info(hr_msi)
    if isinstance(method, str):
        scales = model_scales(model, method)
    else:
        scales = (method.scale,)
    plan = plan_grids(lr_info, msi_info, scale=scale, model_scales=scales)
    notes: List[str] = list(plan.notes)
    out_dtype, out_scale = _output_format(dtype, output_scale, lr_info)
    # every read and write of the run under a small block cache: GDAL's default (5 % of the RAM) keeps
    # each input block the shift and radiometry samples touch, which grows with the raster
    with gdal_block_cache(BLOCK_CACHE_MB):
        shift, reliable, message = (0.0, 0.0), False, "not estimated (shift correction off)."
        if shift_correction:
            reporter.update(0.0, "estimating the shift between the inputs")
            shift, reliable, message = _estimate_shift(lr_hsi, hr_msi, plan)
        applied = shift if reliable else (0.0, 0.0)
        read_start = time.perf_counter()
        with open_aligned(lr_hsi, hr_msi, plan, applied) as pair:
            lr_sample, msi_sample = sample_scene(pair)
        radiometry = measure_radiometry(lr_sample, msi_sample)
        sample_seconds = time.perf_counter() - read_start
        if isinstance(method, str):
            fusion = make_method(method, model, device=torch_device, scale=plan.scale, lr_bands=lr_info.bands,
                                 msi_bands=msi_info.count, msi_wavelengths=[b.wavelength_nm for b in msi_info.bands])
        else:
            fusion = method
        if fusion.scale != plan.scale:
            raise InputError(f"method {fusion.name!r} fuses at scale {fusion.scale}, the inputs at {plan.scale}")
        if isinstance(fusion, GSAMethod):
            fusion.fit(lr_sample / radiometry.lr_level, msi_sample / radiometry.msi_level,
                       [b.good for b in lr_info.bands])
        context = tile_halo(fusion, halo)
        reporter.update(0.02, "scene sampled")

        def notify(text: str) -> None:
            notes.append(text)
            reporter.update(0.02, text)

        grid = plan.output
        while True:
            tiles = plan_tiles(plan.lr.width, plan.lr.height, tile=tile, overlap=min(overlap, tile // 4),
                               halo=context, scale=plan.scale)
            try:
                with RasterWriter(output, width=grid.width, height=grid.height, count=lr_info.count, crs=grid.crs,
                                  transform=grid.transform, dtype=out_dtype, bands=lr_info.bands, scale=out_scale,
                                  compress=compress, blocksize=output_block, cog=cog,
                                  overwrite=overwrite) as writer:
                    result = run_pipeline(partial(open_aligned, lr_hsi, hr_msi, plan, applied), fusion, tiles,
                                          writer, radiometry, batch_size=batch_size, block_width=block_width,
                                          out_block=output_block, reporter=reporter.phase(0.02, 1.0), notify=notify)
                break
            except TileTooLarge:
                if tile // 2 < MIN_TILE:
                    raise
                tile //= 2
                notify(f"out of memory with single tiles: tile size reduced to {tile} LR pixels")
    timings = result.timings
    return FuseReport(
        output=str(output),
        grid=Grid(grid.crs.to_wkt(), tuple(grid.transform)[:6], grid.width, grid.height),
        scale=plan.scale, shift=shift if reliable else (0.0, 0.0), shift_corrected=applied != (0.0, 0.0),
        shift_reliable=reliable, shift_message=message,
        tiles_total=result.tiles, tiles_skipped=result.skipped, tiles_recomputed=result.recomputed,
        tile_size=tile, halo=context, batch_size=result.batch_size, device=str(torch_device), method=fusion.name,
        model=getattr(fusion, "model_name", ""),
        timings={"read": timings.read + sample_seconds, "infer": timings.infer, "blend": timings.blend,
                 "write": timings.write, "total": time.perf_counter() - started},
        notes=tuple(notes),
    )
