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

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple, Union, cast

import numpy as np
import torch
from rasterio.windows import Window

from csakd_qgis.classical import ClassicalMethod, choose, fit_method, median_snr_db
from csakd_qgis.errors import ImplausibleOutputError, InputError
from csakd_qgis.estimation import Degradation, estimate_degradation, relabelled_bands
from csakd_qgis.fusion.inputs import network_msi_order, reorder, resolve_pair, with_msi_bands
from csakd_qgis.fusion.methods import (
    NETWORK_METHODS,
    NETWORKS,
    FusionMethod,
    auto_network,
    make_method,
    model_scales,
)
from csakd_qgis.fusion.pipeline import PipelineResult
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.fusion.sample import SceneSample, empty_bands, measure_radiometry, sample_scene
from csakd_qgis.fusion.tiling import TilePlan, plan_tiles
from csakd_qgis.geo.coregister import AlignedPair, measure_shift, open_aligned, warped_cache_mb
from csakd_qgis.geo.grid import GridPlan, plan_grids
from csakd_qgis.io.bands import RasterInfo
from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache, read_info
from csakd_qgis.io.write import RasterWriter
from csakd_qgis.options import CLASSICAL_METHODS, OUTPUT_BLOCK, FuseOptions, MsiBands
from csakd_qgis.progress import SILENT, Reporter
from csakd_qgis.simulation.degradation import psf_sigma

#: Largest misregistration (LR pixels, on either axis) left to the PSF fit; a larger one is corrected by the reads.
#: The fit searches offsets up to 1 LR pixel (:func:`csakd_qgis.estimation.psf.estimate_psf`).
FIT_OFFSET_LIMIT = 0.9

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


#: ``opener(lr_info, shift)``: the inputs on the plan's grids (:meth:`FusionPlan.open_pair` before the plan exists).
Opener = Callable[[RasterInfo, Tuple[float, float]], ContextManager[AlignedPair]]


def _estimate_shift(opener: Opener, lr_info: RasterInfo) -> Tuple[Tuple[float, float], bool, str]:
    """``((dx, dy), reliable, message)`` measured on a central sample; unreliable when it cannot be measured."""
    try:
        with opener(lr_info, (0.0, 0.0)) as pair:
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
        shift above :data:`FIT_OFFSET_LIMIT` (its fit takes the rest into
        account).
    shift_measured:
        The estimate ``(dx, dy)``: the reads' shift plus the PSF fit's
        offset, or phase correlation's where the fit is not reliable (0, 0
        when neither is), reported whether or not it was applied.
    shift_reliable, shift_message:
        Whether the estimate was reliable, and what it said.
    radiometry:
        Scene-wide levels and fill values (:func:`measure_radiometry`).
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

        :data:`~csakd_qgis.io.read.BLOCK_CACHE_MB` plus, for each input,
        the decoded blocks (all bands) that one row of tiles of a column
        block can touch: a column block and a tile read on either side
        across, one tile read down, plus a block each way
        (:meth:`~csakd_qgis.io.bands.RasterInfo.block_row_bytes`; the MSI
        in output pixels).  With less, every tile decodes again the input
        blocks its neighbour just decoded: a 1000-pixel-wide, 224-band
        EnMAP scene in 256-pixel ZSTD blocks (115 MB per block row) spent
        minutes per column block decompressing under the 64 MB cache.
        A warped LR-HSI read (a shift, another grid) also needs its warped
        blocks (:func:`~csakd_qgis.geo.coregister.warped_cache_mb`).  The
        size depends on the widths, the bands and the tile, not on the
        raster's height or length, so memory stays flat; it is capped at
        :data:`MAX_BLOCK_CACHE_MB`.
        """
        s = self.grids.scale
        read_h, read_w = tiles.read_shape
        span = block_width // s + 2 * read_w
        needed = (self.lr_info.block_row_bytes(span, read_h)
                  + self.msi_info.block_row_bytes(span * s, read_h * s))
        warped = warped_cache_mb(self.lr_info, self.grids.lr, self.shift)
        return min(BLOCK_CACHE_MB + warped + -(-needed // 2**20), MAX_BLOCK_CACHE_MB)

    def sample_cache_mb(self) -> int:
        """GDAL block cache (MB) for sample windows of the inputs read unshifted (the output guard's).

        :data:`~csakd_qgis.io.read.BLOCK_CACHE_MB`, plus the blocks of a
        warped read when the LR-HSI is reprojected or resampled onto the LR
        grid (:func:`~csakd_qgis.geo.coregister.warped_cache_mb`), capped at
        :data:`MAX_BLOCK_CACHE_MB`.
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
            empty_bands=tuple(b + 1 for b in self.radiometry.empty_bands),
        )


def _bad_bands_from_data(opener: Opener, lr_info: RasterInfo) -> Tuple[RasterInfo, Tuple[int, ...], List[str]]:
    """``(lr_info with empty bands marked bad, empty band indexes (0-based), notes)``.

    A band without any valid value in the scene sample
    (:func:`~csakd_qgis.fusion.sample.empty_bands`) is a bad band whatever
    its metadata says: excluded from fitting and written as nodata with
    ``bbl = 0``; the notes name the ones the metadata called good.  When
    every band is empty, nothing is changed (the radiometry then says
    there is no valid pixel).
    """
    with opener(lr_info, (0.0, 0.0)) as pair:
        empty = empty_bands(pair)
    if empty.all():
        return lr_info, (), []
    good = np.array([b.good for b in lr_info.bands])
    found = empty & good
    if not found.any():
        return lr_info, tuple(int(i) for i in np.flatnonzero(empty)), []
    bands = tuple(dataclasses.replace(b, good=False) if e else b for b, e in zip(lr_info.bands, found))
    index = tuple(int(i) for i in np.flatnonzero(found))
    listed = ", ".join(str(i + 1) for i in index[:20]) + (" ..." if len(index) > 20 else "")
    note = (f"{len(index)} LR-HSI band(s) hold no valid value in the scene sample (bands {listed}): treated as "
            "bad bands, excluded from fitting and written as nodata with bbl = 0")
    return dataclasses.replace(lr_info, bands=bands), tuple(int(i) for i in np.flatnonzero(empty)), [note]


def _estimate_degradation(sample: SceneSample, radiometry: Radiometry, scale: int, lr_info: RasterInfo,
                          msi_info: RasterInfo) -> Tuple[Optional[Degradation], List[str]]:
    """The degradation estimated on the normalised sample mosaic, or None with a note saying why not."""
    good = [b.good for b in lr_info.bands]
    wavelengths = [b.wavelength_nm for b in lr_info.bands]
    try:
        estimate = estimate_degradation(sample.mosaic_lr / radiometry.lr_level,
                                        sample.mosaic_msi / radiometry.msi_level, scale, good=good,
                                        wavelengths_nm=cast(List[float], wavelengths)
                                        if None not in wavelengths else None)
    except InputError as error:
        return None, [f"degradation not estimated: {error}"]
    return estimate, [f"degradation: {line}" for line in estimate.messages]


def _msi_identity(degradation: Optional[Degradation], lr_info: RasterInfo, msi_info: RasterInfo, name: str,
                  guard: bool) -> List[str]:
    """Notes on the HR-MSI's band labels against the spectral response estimated from the pair.

    When the estimated responses say the bands are in another order than
    their wavelengths (metadata or ``--msi-bands``) say
    (:func:`~csakd_qgis.estimation.relabelled_bands`), a network would get
    the wrong bands: with the ``guard`` on, method ``name`` being a
    network is refused (:class:`ImplausibleOutputError`).  The classical
    methods fit their own band weights and only get a note.
    """
    lr_wl = np.array([np.nan if b.wavelength_nm is None else b.wavelength_nm for b in lr_info.bands])
    nominal = np.array([np.nan if b.wavelength_nm is None else b.wavelength_nm for b in msi_info.bands])
    if degradation is None or not degradation.reliable or not np.isfinite(nominal).all():
        return []
    srf = np.asarray(degradation.srf, dtype=np.float64)
    if not np.isfinite(lr_wl[srf.any(axis=0)]).all():
        return []
    centroids = srf @ np.nan_to_num(lr_wl)
    labels = relabelled_bands(centroids, nominal)
    if labels is None:
        return []
    moved = "; ".join(f"band {i + 1} is labelled {nominal[i]:.0f} nm but responds like {nominal[j]:.0f} nm "
                      f"(estimated centroid {centroids[i]:.0f} nm)" for i, j in enumerate(labels) if i != j)
    text = (f"the HR-MSI's bands look like another order than their wavelengths say, by the spectral response "
            f"estimated from the pair: {moved}")
    if name in NETWORKS and guard:
        raise ImplausibleOutputError(
            f"{text}. A network would read the wrong bands, so nothing was fused. Fix the band wavelengths in the "
            "HR-MSI's metadata, or name its bands in their stored order (--msi-bands / --msi-wavelengths, QGIS: "
            "MSI_BANDS / MSI_WAVELENGTHS); to fuse anyway, turn the output guard off (--no-guard)")
    affected = "a network reads the wrong bands" if name in NETWORKS else \
        "the classical methods fit their own band weights and are not affected"
    return [f"{text} ({affected})"]


def _total_shift(read_shift: Tuple[float, float], measured: Tuple[float, float],
                 degradation: Optional[Degradation]) -> Tuple[float, float]:
    """The LR-HSI's misregistration ``(dx, dy)`` in LR pixels: the reads' shift plus the PSF fit's offset.

    Phase correlation's ``measured`` shift where the PSF fit is not reliable.
    """
    if degradation is None or not degradation.reliable:
        return measured
    return (read_shift[0] + float(degradation.offset[0]), read_shift[1] + float(degradation.offset[1]))


@dataclass(frozen=True)
class _Scene:
    """What :func:`prepare` measures on the pair before it chooses a method.

    ``lr_info`` has the bands without data marked bad; ``reliable`` and
    ``message`` describe phase correlation's shift estimate, ``measured``
    is that estimate when reliable (else zero), ``read_shift`` the part
    the sample's reads apply (above :data:`FIT_OFFSET_LIMIT` only);
    ``snr`` is the LR-HSI's median SNR (dB) when the noise was estimated;
    ``scale`` the grids' resolution ratio.
    """

    lr_info: RasterInfo
    notes: Tuple[str, ...]
    reliable: bool
    message: str
    measured: Tuple[float, float]
    read_shift: Tuple[float, float]
    sample: SceneSample
    radiometry: Radiometry
    sample_seconds: float
    degradation: Optional[Degradation]
    snr: Optional[float]
    scale: int


def _measure_scene(opener: Opener, lr_info: RasterInfo, msi_info: RasterInfo, grids: GridPlan,
                   options: FuseOptions, reporter: Reporter) -> _Scene:
    """Bad bands, shift, the scene sample, radiometry, the degradation and the SNR, in that order."""
    start = time.perf_counter()
    lr_info, empty, notes = _bad_bands_from_data(opener, lr_info)
    shift, reliable, message = (0.0, 0.0), False, "not estimated (shift correction off)."
    if options.shift_correction:
        reporter.update(0.0, "estimating the shift between the inputs")
        shift, reliable, message = _estimate_shift(opener, lr_info)
    measured = shift if reliable else (0.0, 0.0)
    # a misregistration within FIT_OFFSET_LIMIT is measured by the PSF fit on unshifted reads (more exactly than
    # by phase correlation); only a larger one is corrected by the reads before the degradation is estimated
    read_shift = measured if max(abs(measured[0]), abs(measured[1])) > FIT_OFFSET_LIMIT else (0.0, 0.0)
    warped = warped_cache_mb(lr_info, grids.lr, read_shift)
    with gdal_block_cache(min(BLOCK_CACHE_MB + warped, MAX_BLOCK_CACHE_MB)), opener(lr_info, read_shift) as pair:
        sample = sample_scene(pair)
    radiometry = measure_radiometry(sample.lr, sample.msi_lr, empty)
    seconds = time.perf_counter() - start
    reporter.update(0.01, "estimating the degradation from the pair")
    degradation, more = _estimate_degradation(sample, radiometry, grids.scale, lr_info, msi_info)
    snr = None if degradation is None else median_snr_db(sample.mosaic_lr / radiometry.lr_level,
                                                         degradation.noise_lr)
    return _Scene(lr_info, tuple(notes + more), reliable, message, measured, read_shift, sample, radiometry,
                  seconds, degradation, snr, grids.scale)


def _resolve_auto(method: Union[str, FusionMethod], model: object, scene: _Scene,
                  msi_info: RasterInfo) -> Tuple[str, object, List[str]]:
    """``(method name, model, notes)`` with ``"auto"`` resolved; ``""`` for a method object.

    ``auto`` takes a network whose card shows it beating the classical
    methods (:func:`~csakd_qgis.fusion.methods.auto_network`), else the
    classical method for the scene's SNR (:func:`~csakd_qgis.classical.choose`).
    """
    name = method if isinstance(method, str) else ""
    if name != "auto":
        return name, model, []
    model, why = auto_network(model, scene.lr_info.bands, msi_info.count, [b.wavelength_nm for b in msi_info.bands],
                              scene.scale)
    if model is None:
        name, reason = choose(scene.snr)
        why = f"{why}; {reason}"
    else:
        name = "csakd"
    return name, model, [f"method auto: {why}"]


def _fit_classical(name: str, scene: _Scene,
                   total: Tuple[float, float]) -> Tuple[ClassicalMethod, Tuple[float, float], List[str]]:
    """``(method, shift applied to the reads, notes)``: classical method ``name`` fitted on the normalised sample.

    The estimated PSF is used (the default when unreliable); the offset
    ``total`` (LR pixels) less what the reads apply goes into the fit
    instead of a resampling.
    """
    notes = []
    degradation = scene.degradation
    if degradation is None or not degradation.reliable:
        sigma = psf_sigma(scene.scale)
        notes.append(f"PSF {'unknown' if degradation is None else 'estimate not reliable'}: the default Gaussian "
                     f"(sigma {sigma:.2f} output px, MTF 0.3 at Nyquist) is used")
    else:
        sigma = degradation.sigma
    offset = (total[0] - scene.read_shift[0], total[1] - scene.read_shift[1])
    sample, radiometry = scene.sample, scene.radiometry
    fusion = fit_method(name, sample.mosaic_lr / radiometry.lr_level, sample.mosaic_msi / radiometry.msi_level,
                        scene.scale, sigma, offset, [b.good for b in scene.lr_info.bands])
    if offset != (0.0, 0.0):
        notes.append(f"offset ({offset[0]:+.3f}, {offset[1]:+.3f}) LR px taken into the fit of {name} "
                     "(the LR-HSI is not resampled: a resampling would blur it)")
    return fusion, scene.read_shift, notes


def _degradation_report(scene: _Scene, fusion: FusionMethod, estimate: Tuple[float, float],
                        applied: Tuple[float, float]) -> Dict[str, Any]:
    """:attr:`FusionPlan.degradation`: the estimate with the offset left to the reads, the SNR and the rank."""
    degradation = scene.degradation
    # without an estimate, the last note of the scene's measurement says why (_estimate_degradation)
    report: Dict[str, Any] = degradation.to_dict() if degradation is not None else {"error": scene.notes[-1]}
    if degradation is not None:  # the offset left between the tiles' reads and the HR-MSI (the guard uses it)
        report["offset"] = [estimate[0] - applied[0], estimate[1] - applied[1]]
    if scene.snr is not None:
        report["snr_lr_db"] = scene.snr
    rank = getattr(getattr(getattr(fusion, "model", None), "subspace", None), "rank", None)
    if rank is not None:
        report["subspace_rank"] = int(rank)
    return report


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
    scene = _measure_scene(opener, lr_info, msi_info, grids, options, reporter)
    name, model, notes = _resolve_auto(method, model, scene, msi_info)
    notes = list(scene.notes) + notes + _msi_identity(scene.degradation, scene.lr_info, msi_info, name,
                                                     options.guard)
    estimate = _total_shift(scene.read_shift, scene.measured, scene.degradation)
    total = estimate if options.shift_correction else (0.0, 0.0)
    fusion: FusionMethod
    if name in CLASSICAL_METHODS:
        fusion, applied, more_notes = _fit_classical(name, scene, total)
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
                      degradation=_degradation_report(scene, fusion, estimate, applied),
                      halo=tile_halo(fusion, options.halo), dtype=out_dtype, output_scale=out_scale,
                      method_name=fusion.name, model_name=getattr(fusion, "model_name", ""),
                      notes=tuple(inputs.notes) + tuple(input_notes) + tuple(more) + tuple(grids.notes)
                      + tuple(notes), sample_seconds=scene.sample_seconds, msi_order=order,
                      lr_masks=inputs.lr_masks, msi_masks=inputs.msi_masks)
    reporter.update(0.02, "scene sampled")
    return plan, fusion
