"""Planning a fusion: everything decided before the first tile is read, as a picklable :class:`FusionPlan`.

:func:`prepare` plans the output and LR grids (:func:`csakd_qgis.geo.grid.plan_grids`),
measures the scene (:mod:`csakd_qgis.fusion.scene`: bad bands, the LR-HSI's sub-pixel
shift, the radiometry on a sample, the degradation), builds and fits the
method and chooses the halo and the output format.  The
distributed mode (:mod:`csakd_qgis.distributed`) computes the plan once on its
client and sends it to every worker, so all parts of the output are
normalised alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ContextManager, Dict, List, Optional, Tuple, Union, cast

import numpy as np
import torch
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.estimation import Degradation
from csakd_qgis.fusion.inputs import network_msi_order, reorder, resolve_pair, with_msi_bands
from csakd_qgis.fusion.methods import NETWORK_METHODS, FusionMethod, make_method, model_scales
from csakd_qgis.fusion.pipeline import PipelineResult
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.fusion.scene import degradation_report, fit_classical, measure_scene, msi_identity, resolve_auto
from csakd_qgis.fusion.tiling import TilePlan, plan_tiles
from csakd_qgis.geo.coregister import AlignedPair, open_aligned, warped_cache_mb
from csakd_qgis.geo.grid import GridPlan, plan_grids
from csakd_qgis.io.bands import RasterInfo
from csakd_qgis.io.read import BLOCK_CACHE_MB, MAX_BLOCK_CACHE_MB, read_info
from csakd_qgis.io.write import RasterWriter
from csakd_qgis.options import CLASSICAL_METHODS, OUTPUT_BLOCK, FuseOptions, MsiBands
from csakd_qgis.progress import SILENT, Reporter

#: Default LR context (pixels per tile side) for networks; see the module docstring.
NETWORK_HALO = 4

#: GDAL block cache (MB) for the output's writes when both inputs' read blocks are counted
#: (:meth:`FusionPlan.block_cache_mb`); the output is written in whole blocks, so it needs little.
WRITE_CACHE_MB = 16


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


@dataclass(frozen=True)
class FusionPlan:
    """What a fusion decides before it reads a tile; plain, picklable data.

    Attributes
    ----------
    lr_hsi, hr_msi:
        The input rasters (paths GDAL opens: products already resolved,
        :func:`csakd_qgis.fusion.inputs.resolve_pair`).
    grids:
        Output and LR grids (:func:`csakd_qgis.geo.grid.plan_grids`).
    lr_info, msi_info:
        The inputs' sizes and band metadata (the output takes the LR-HSI's
        bands); ``msi_info`` with the wavelengths the MSI options filled in,
        its bands in ``msi_order``.
    shift:
        LR-HSI offset ``(dx, dy)`` in LR pixels applied to its reads: the
        whole estimate for a network or bicubic (0, 0 when not estimated,
        not reliable or correction is off); for a classical method only a
        shift above :data:`~csakd_qgis.fusion.scene.FIT_OFFSET_LIMIT` (its
        fit takes the rest into account).
    shift_measured:
        The estimate ``(dx, dy)``: the reads' shift plus the PSF fit's
        offset, or phase correlation's where the fit is not reliable (0, 0
        when neither is), reported whether or not it was applied.
    shift_reliable, shift_message:
        Whether the estimate was reliable, and what it said.
    radiometry:
        Scene-wide levels and fill values (:func:`~csakd_qgis.fusion.sample.measure_radiometry`).
    degradation:
        The degradation estimated from the pair
        (:meth:`csakd_qgis.estimation.Degradation.to_dict`, with the
        classical method's ``subspace_rank`` when it has one), or
        ``{"error": ...}`` when it could not be estimated.
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
    msi_order:
        1-based HR-MSI band numbers read, in this order (None: the raster's
        order), so that a network gets its bands in its own order.
    lr_masks, msi_masks:
        Rasters of pixels to exclude (nonzero) for each input: invalid in
        every read, so nodata in the output and left out of every estimate.
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
    degradation: Dict[str, Any]
    halo: int
    dtype: str
    output_scale: float
    method_name: str
    model_name: str
    notes: Tuple[str, ...]
    sample_seconds: float
    msi_order: Optional[Tuple[int, ...]] = None
    lr_masks: Tuple[str, ...] = ()
    msi_masks: Tuple[str, ...] = ()

    def open_pair(self) -> ContextManager[AlignedPair]:
        """The inputs on the plan's grids, shift applied (one pair per thread, see :func:`open_aligned`)."""
        return open_aligned(self.lr_hsi, self.hr_msi, self.grids, self.shift, lr_info=self.lr_info,
                            msi_info=self.msi_info, msi_order=self.msi_order, lr_masks=self.lr_masks,
                            msi_masks=self.msi_masks)

    def tiles(self, tile: int, overlap: int) -> TilePlan:
        """Tile plan of the LR grid: cores of ``tile`` LR px overlapping by ``overlap``, with the plan's halo."""
        return plan_tiles(self.grids.lr.width, self.grids.lr.height, tile=tile, overlap=overlap,
                          halo=self.halo, scale=self.grids.scale)

    def block_cache_mb(self, tiles: TilePlan, block_width: int) -> int:
        """GDAL block cache (MB) for running ``tiles`` in column blocks of ``block_width`` output pixels.

        :data:`~csakd_qgis.io.read.BLOCK_CACHE_MB` (:data:`WRITE_CACHE_MB`
        when both inputs' blocks are counted: it then only serves the
        output's whole-block writes; 60-band pixel-interleaved GSA at
        8064 x 1008 output px peaked at 708 instead of 766 MB, median of 3,
        in the same time) plus, for each input whose storage blocks hold
        every band (:attr:`~csakd_qgis.io.bands.RasterInfo.shared_blocks`,
        pixel-interleaved), the decoded blocks that one row of tiles of a
        column block can touch: a column block and a tile read on either
        side across, one tile read down, plus a block each way
        (:meth:`~csakd_qgis.io.bands.RasterInfo.block_row_bytes`; the MSI
        in output pixels).  With less, every band read of every tile
        decodes again the blocks of all bands: a 1000-pixel-wide, 224-band
        EnMAP scene in 256-pixel ZSTD blocks (115 MB per block row) spent
        minutes per column block decompressing under the 64 MB cache, and
        PSF-matched GSA on a 224-band pixel-interleaved float32 input
        (1008 x 3024 output) took 57 s under 64 MB against 47 s under the
        full size.  A band-interleaved input gains nothing from it (60 against
        64 s on the same scene stored by band, 367 MB less at the peak), so
        its blocks are not counted.  A warped LR-HSI read (a shift, another
        grid) also needs its warped blocks
        (:func:`~csakd_qgis.geo.coregister.warped_cache_mb`).  The size
        depends on the widths, the bands and the tile, not on the raster's
        height or length; it is capped at
        :data:`~csakd_qgis.io.read.MAX_BLOCK_CACHE_MB`.
        """
        s = self.grids.scale
        read_h, read_w = tiles.read_shape
        span = block_width // s + 2 * read_w
        counted = [info.block_row_bytes(width, height)
                   for info, width, height in ((self.lr_info, span, read_h), (self.msi_info, span * s, read_h * s))
                   if info.shared_blocks]
        base = WRITE_CACHE_MB if len(counted) == 2 else BLOCK_CACHE_MB
        warped = warped_cache_mb(self.lr_info, self.grids.lr, self.shift)
        return min(base + warped + -(-sum(counted) // 2**20), MAX_BLOCK_CACHE_MB)

    def sample_cache_mb(self) -> int:
        """GDAL block cache (MB) for sample windows of the inputs read unshifted (the output guard's).

        :data:`~csakd_qgis.io.read.BLOCK_CACHE_MB`, plus the blocks of a
        warped read when the LR-HSI is reprojected or resampled onto the LR
        grid (:func:`~csakd_qgis.geo.coregister.warped_cache_mb`), capped at
        :data:`~csakd_qgis.io.read.MAX_BLOCK_CACHE_MB`.
        """
        return min(BLOCK_CACHE_MB + warped_cache_mb(self.lr_info, self.grids.lr), MAX_BLOCK_CACHE_MB)

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
            output=str(output), grid=grid,
            scale=self.grids.scale, shift=self.shift_measured, shift_corrected=self.shift != (0.0, 0.0),
            shift_reliable=self.shift_reliable, shift_message=self.shift_message,
            tiles_total=result.tiles, tiles_skipped=result.skipped, tiles_recomputed=result.recomputed,
            tile_size=tile, halo=self.halo, batch_size=result.batch_size, device=device, method=self.method_name,
            model=self.model_name,
            timings={"read": t.read + self.sample_seconds, "infer": t.infer, "blend": t.blend, "write": t.write,
                     "total": seconds},
            notes=notes, degradation=dict(self.degradation),
            empty_bands=tuple(b + 1 for b in self.radiometry.empty_bands), tiles_carried=result.carried,
            streams=result.streams,
        )


def _total_shift(read_shift: Tuple[float, float], measured: Tuple[float, float],
                 degradation: Optional[Degradation]) -> Tuple[float, float]:
    """The LR-HSI's misregistration ``(dx, dy)`` in LR pixels: the reads' shift plus the PSF fit's offset.

    Phase correlation's ``measured`` shift where the PSF fit is not reliable.
    """
    if degradation is None or not degradation.reliable:
        return measured
    return (read_shift[0] + float(degradation.offset[0]), read_shift[1] + float(degradation.offset[1]))


def _msi_order(model: object, name: str, lr_info: RasterInfo, msi_info: RasterInfo,
               scale: int) -> Tuple[Optional[Tuple[int, ...]], RasterInfo, List[str]]:
    """``(order, msi_info in that order, notes)`` when a network takes the HR-MSI's bands in another order."""
    wavelengths = [b.wavelength_nm for b in msi_info.bands]
    found = network_msi_order(model, name, lr_info.bands, wavelengths, scale) if name else None
    if found is None:
        return None, msi_info, []
    order, model_name = found
    have = ", ".join(f"{w:.0f}" for w in wavelengths if w is not None)
    ordered = ", ".join(f"{wavelengths[b - 1]:.0f}" for b in order)
    return order, reorder(msi_info, order), [
        f"HR-MSI bands read in the order {', '.join(map(str, order))} ({ordered} nm) that model {model_name!r} "
        f"expects; the file holds them as {have} nm"]


def prepare(lr_hsi: str, hr_msi: str, *, model: object = None, method: Union[str, FusionMethod] = "auto",
            device: Union[str, torch.device] = "cpu", options: Optional[FuseOptions] = None,
            reporter: Reporter = SILENT, lr_mask: Optional[str] = None, msi_mask: Optional[str] = None,
            msi_bands: Optional[MsiBands] = None,
            cache_dir: Optional[str] = None) -> Tuple[FusionPlan, FusionMethod]:
    """Plan a fusion: inputs, grids, bad bands, shift, radiometry, degradation, the method (fitted) and the halo.

    Reads samples only.  Parameters are those of
    :func:`~csakd_qgis.fusion.engine.fuse` (``device``: a name or
    ``torch.device`` the method's network is loaded on, instead of
    ``options.device``).  Products are resolved here, once
    (:func:`~csakd_qgis.fusion.inputs.resolve_pair`): the plan names the
    rasters written for them, and their masks.  Run it under
    :func:`~csakd_qgis.io.read.gdal_block_cache` (:func:`fuse` does).

    Returns
    -------
    plan : FusionPlan
        Picklable; the same for every tile and every part of the output.
    method : FusionMethod
        Ready to predict (a network is loaded on ``device``; a classical
        method is fitted on the scene sample).

    Raises
    ------
    InputError, GridError, RasterReadError, CheckpointError, ModelMismatchError, Cancelled
    """
    options = options or FuseOptions()
    inputs = resolve_pair(lr_hsi, hr_msi, lr_mask=lr_mask, msi_mask=msi_mask, cache_dir=cache_dir)
    lr_info, msi_info = read_info(inputs.lr_hsi), read_info(inputs.hr_msi)
    msi_info, input_notes = with_msi_bands(msi_info, msi_bands)
    scales = model_scales(model, method) if isinstance(method, str) else (method.scale,)
    grids = plan_grids(lr_info, msi_info, scale=options.scale, model_scales=scales)
    order, msi_info, more = _msi_order(model, method if isinstance(method, str) else "", lr_info, msi_info,
                                       grids.scale)

    def opener(info: RasterInfo, shift: Tuple[float, float]) -> ContextManager[AlignedPair]:
        return open_aligned(inputs.lr_hsi, inputs.hr_msi, grids, shift, lr_info=info, msi_info=msi_info,
                            msi_order=order, lr_masks=inputs.lr_masks, msi_masks=inputs.msi_masks)

    out_dtype, out_scale = _output_format(options, lr_info)
    scene = measure_scene(opener, lr_info, msi_info, grids, options, reporter)
    name, model, notes = resolve_auto(method, model, scene, msi_info)
    notes = list(scene.notes) + notes + msi_identity(scene.degradation, scene.lr_info, msi_info, name,
                                                     options.guard)
    estimate = _total_shift(scene.read_shift, scene.measured, scene.degradation)
    total = estimate if options.shift_correction else (0.0, 0.0)
    fusion: FusionMethod
    if name in CLASSICAL_METHODS:
        fusion, applied, more_notes = fit_classical(name, scene, total, auto=method == "auto")
        notes += more_notes
    else:  # every reliable shift, however small, is corrected by the reads (its cost: docs/engine.md)
        applied = total
        fusion = cast(FusionMethod, method) if not name else make_method(
            name, model, device=device, scale=grids.scale, lr_bands=scene.lr_info.bands, msi_bands=msi_info.count,
            msi_wavelengths=[b.wavelength_nm for b in msi_info.bands], backend=options.backend,
            precision=options.precision)
    if fusion.scale != grids.scale:
        raise InputError(f"method {fusion.name!r} fuses at scale {fusion.scale}, the inputs at {grids.scale}")
    plan = FusionPlan(lr_hsi=str(inputs.lr_hsi), hr_msi=str(inputs.hr_msi), grids=grids, lr_info=scene.lr_info,
                      msi_info=msi_info, shift=applied, shift_measured=estimate, shift_reliable=scene.reliable,
                      shift_message=scene.message, radiometry=scene.radiometry,
                      degradation=degradation_report(scene, fusion, estimate, applied),
                      halo=tile_halo(fusion, options.halo), dtype=out_dtype, output_scale=out_scale,
                      method_name=fusion.name, model_name=getattr(fusion, "model_name", ""),
                      notes=tuple(inputs.notes) + tuple(input_notes) + tuple(more) + tuple(grids.notes)
                      + tuple(notes), sample_seconds=scene.sample_seconds, msi_order=order,
                      lr_masks=inputs.lr_masks, msi_masks=inputs.msi_masks)
    reporter.update(0.02, "scene sampled")
    return plan, fusion
