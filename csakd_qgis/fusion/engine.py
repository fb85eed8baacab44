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
(:func:`csakd_qgis.models.receptive_field.network_halo`: 36 LR px for the project student
at scale 4), which makes tiles identical to whole-image inference but reads
far more pixels than it computes; ``docs/pipeline.md`` gives the measured
trade-off.

Integer outputs
---------------
``FuseOptions.output_scale`` is the physical value of one stored unit (GDAL band scale).
For integer ``dtype`` it defaults to the LR-HSI's own band scale (1 when
absent), so an EnMAP LR-HSI stored as reflectance x 10000 gives an output
with the same numbers; for reflectance in ``[0, 1]`` pass ``1e-4`` to store
reflectance x 10000.  Float outputs default to ``output_scale=1``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, List, Optional, Tuple, Union

import torch
from rasterio.windows import Window

from csakd_qgis.devices import compute_streams, resolve_device, set_threads, shared_threads
from csakd_qgis.errors import ImplausibleOutputError, TileTooLarge
from csakd_qgis.fusion.methods import NETWORK_METHODS, FusionMethod
from csakd_qgis.fusion.pipeline import PipelineResult, run_pipeline
from csakd_qgis.fusion.plan import FusionPlan, prepare
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache
from csakd_qgis.io.style import style_note
from csakd_qgis.io.write import check_destination
from csakd_qgis.options import FuseOptions, MsiBands, default_batch_size
from csakd_qgis.progress import SILENT, Reporter
from csakd_qgis.quality.guard import GuardReport, check_fused, describe

#: Smallest tile (LR pixels) the out-of-memory policy goes down to.
MIN_TILE = 8


def run_plan(plan: FusionPlan, method: FusionMethod, options: FuseOptions, path: str, *,
             region: Optional[Window] = None, reporter: Reporter = SILENT,
             notify: Callable[[str], None] = lambda text: None) -> Tuple[PipelineResult, int]:
    """Run ``plan``'s tiles through ``method`` into the GeoTIFF ``path``: the whole output, or one HR ``region``.

    The one place a plan meets a writer, for :func:`fuse` and for the Dask
    workers (:func:`csakd_qgis.distributed.worker.fuse_region`).  The tiles
    run under a GDAL block cache sized for them
    (:meth:`~csakd_qgis.fusion.plan.FusionPlan.block_cache_mb`).  When one
    tile does not fit in the device's memory
    (:class:`~csakd_qgis.errors.TileTooLarge`), the tile is halved, down to
    :data:`MIN_TILE` LR pixels, and the output written again (``notify``
    says so; for a region this gives it a tile plan of its own, so its
    border pixels may differ slightly from a whole-output run).  A region
    file is always overwritten and never a COG.  A network on the CPU
    predicts :func:`~csakd_qgis.devices.compute_streams` batches at once,
    each with its share of torch's threads
    (:func:`~csakd_qgis.devices.shared_threads`).

    Returns
    -------
    (PipelineResult, int)
        The pipeline's counts and timings, and the tile size used (LR pixels).
    """
    tile = options.tile
    device = getattr(method, "device", None)  # classical methods run on the CPU and have none
    device_type = str(getattr(device, "type", "cpu"))
    batch = options.batch_size or default_batch_size(device_type)
    streams = compute_streams(device_type, isinstance(method, NETWORK_METHODS), torch.get_num_threads())
    cog, overwrite = (options.cog, options.overwrite) if region is None else (False, True)
    while True:
        tiles = plan.tiles(tile, min(options.tile_overlap, tile // 4))
        try:
            with gdal_block_cache(plan.block_cache_mb(tiles, options.block_width)), shared_threads(streams), \
                    plan.writer(path, window=region, compress=options.compress, blocksize=options.output_block,
                                cog=cog, overwrite=overwrite) as writer:
                result = run_pipeline(plan.open_pair, method, tiles, writer, plan.radiometry,
                                      batch_size=batch, block_width=options.block_width,
                                      out_block=options.output_block, region=region, reporter=reporter,
                                      notify=notify, carry_dir=os.path.dirname(os.path.abspath(path)),
                                      streams=streams)
            return result, tile
        except TileTooLarge:
            if tile // 2 < MIN_TILE:
                raise
            tile //= 2
            notify(f"out of memory with single tiles: tile size reduced to {tile} LR pixels")


def fuse(lr_hsi: str, hr_msi: str, output: str, *, model: object = None,
         method: Union[str, FusionMethod] = "auto", options: Optional[FuseOptions] = None,
         reporter: Optional[Reporter] = None, lr_mask: Optional[str] = None, msi_mask: Optional[str] = None,
         msi_bands: Optional[MsiBands] = None, cache_dir: Optional[str] = None,
         **overrides: object) -> FuseReport:
    """Fuse an LR-HSI with an HR-MSI into an HR-HSI GeoTIFF.

    Parameters
    ----------
    lr_hsi, hr_msi:
        Input rasters (any GDAL format, any CRS with an overlap; see
        :func:`csakd_qgis.geo.grid.plan_grids`) or products as downloaded
        (EnMAP, Sentinel-2, Landsat, PRISMA, EMIT; ``docs/inputs.md``),
        resolved once by :func:`~csakd_qgis.fusion.plan.prepare`; what was
        read is in the report's notes.
    output:
        Output GeoTIFF; written atomically (a partial file never appears
        under this name).  Checked before any input is read
        (:func:`~csakd_qgis.io.write.check_destination`).
    model, method:
        See :func:`csakd_qgis.fusion.methods.make_method` (``model`` None or
        ``"auto"`` selects an installed model); ``method`` may also be a
        ready :class:`~csakd_qgis.fusion.methods.FusionMethod` object (``model`` is
        then ignored).
    options:
        How to fuse (:class:`~csakd_qgis.options.FuseOptions`: tiles, device,
        output format...); None: the defaults.
    reporter:
        Progress and cancellation.
    lr_mask, msi_mask:
        Rasters of pixels to exclude (nonzero) on each input's grid, added
        to a product's own mask: those pixels are nodata in the output and
        left out of the shift, radiometry and degradation estimates.
    msi_bands:
        What the HR-MSI's bands are (:class:`~csakd_qgis.options.MsiBands`),
        filling in wavelengths its metadata lacks; with known wavelengths a
        network gets the bands in its own order.
    cache_dir:
        Folder for the files written for products (None: the user cache,
        :func:`csakd_qgis.products.default_cache_root`).
    overrides:
        :class:`~csakd_qgis.options.FuseOptions` fields replacing those of
        ``options``, e.g. ``fuse(lr, msi, out, tile=32, device="cpu")``.

    Returns
    -------
    FuseReport

    Raises
    ------
    InputError, GridError, RasterReadError, RasterWriteError, CheckpointError, ModelMismatchError, Cancelled
    """
    started = time.perf_counter()
    reporter = reporter or SILENT
    options = options or FuseOptions()
    if overrides:
        options = options.replace(**overrides)
    check_destination(output, overwrite=options.overwrite, inputs=(lr_hsi, hr_msi))
    torch_device = resolve_device(options.device)
    set_threads(options.threads)
    # the shift and radiometry samples under a small block cache: GDAL's default (5 % of the RAM) keeps
    # each input block they touch, which grows with the raster; the tiles then under one sized for them
    with gdal_block_cache(BLOCK_CACHE_MB):
        plan, fusion = prepare(lr_hsi, hr_msi, model=model, method=method, device=torch_device, options=options,
                               reporter=reporter, lr_mask=lr_mask, msi_mask=msi_mask, msi_bands=msi_bands,
                               cache_dir=cache_dir)
    notes: List[str] = list(plan.notes)

    def notify(text: str) -> None:
        notes.append(text)
        reporter.update(0.02, text)

    result, tile = run_plan(plan, fusion, options, output, reporter=reporter.phase(0.02, 0.98), notify=notify)
    guard = _guard(plan, output) if options.guard else None
    style = style_note(output, plan.lr_info.bands)
    if style:
        notes.append(style)
    report = plan.report(output, result, tile=tile, device=str(torch_device),
                         seconds=time.perf_counter() - started, notes=tuple(notes) + (describe(guard),))
    return dataclasses.replace(report, guard=guard.to_dict() if guard else {})


def _guard(plan: FusionPlan, output: str) -> GuardReport:
    """:func:`~csakd_qgis.quality.guard.check_fused`; a failed output is removed and refused.

    Raises
    ------
    ImplausibleOutputError
        The output disagrees with its inputs; the message names the likely cause.
    """
    with gdal_block_cache(plan.sample_cache_mb()):
        guard = check_fused(plan, output)
    if not guard.passed:
        os.remove(output)
        raise ImplausibleOutputError(
            f"the fused image does not agree with its inputs, so it was not kept: {guard.message}. Check the "
            "inputs; to keep such an output anyway, turn the output guard off (--no-guard)")
    return guard
