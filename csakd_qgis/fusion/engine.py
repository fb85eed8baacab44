"""The public fusion entry point, :func:`fuse`.

``fuse`` plans the output and LR grids (:func:`csakd_qgis.geo.grid.plan_grids`:
any CRSs, extents and resolution ratios), optionally estimates the LR-HSI's
sub-pixel shift relative to the HR-MSI (:func:`csakd_qgis.geo.coregister.measure_shift`),
measures the scene's radiometry on a sample, builds the fusion method and
the tile plan, and runs the reader -> compute -> writer pipeline
(:mod:`csakd_qgis.fusion.pipeline`) into an atomically published GeoTIFF.
Everything decided before the first tile is read (grids, shift,
radiometry, halo, output format) comes from :func:`~csakd_qgis.fusion.plan.prepare` as a
picklable :class:`~csakd_qgis.fusion.plan.FusionPlan`, which the distributed mode
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
(:func:`csakd_qgis.io.read.gdal_block_cache`,
:data:`~csakd_qgis.io.read.BLOCK_CACHE_MB`), the tiles with one sized for
the input blocks a row of tiles touches (:meth:`~csakd_qgis.fusion.plan.FusionPlan.block_cache_mb`),
instead of GDAL's default of 5 % of the RAM; the previous size is restored
afterwards.  Under the default,
the sample windows alone left hundreds of MB of decoded input blocks, more
on a larger raster (``docs/pipeline.md``).

Halo
----
``halo=None`` reads :data:`~csakd_qgis.fusion.plan.NETWORK_HALO` LR pixels of context around each
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
from typing import List, Optional, Tuple, Union

from csakd_qgis.devices import TileTooLarge, resolve_device, set_threads
from csakd_qgis.errors import InputError, RasterWriteError
from csakd_qgis.fusion.blend import BLOCK_WIDTH
from csakd_qgis.fusion.methods import FusionMethod
from csakd_qgis.fusion.pipeline import run_pipeline
from csakd_qgis.fusion.plan import OUTPUT_BLOCK, prepare
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache
from csakd_qgis.progress import SILENT, Reporter

#: Smallest tile (LR pixels) the out-of-memory policy goes down to.
MIN_TILE = 8


#: Largest tile core (LR pixels) a run accepts: the QGIS algorithm's limit.
MAX_TILE = 4096


#: Largest batch (tiles) a run accepts: the QGIS algorithm's limit.
MAX_BATCH = 256


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
