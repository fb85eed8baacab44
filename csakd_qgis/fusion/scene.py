"""Measuring the scene before a fusion is planned: bad bands, shift, sample, radiometry, degradation, SNR.

:func:`measure_scene` reads samples of the pair on the plan's grids (through
an :data:`Opener`) and returns a :class:`Scene`; :func:`resolve_auto`,
:func:`fit_classical`, :func:`msi_identity` and :func:`degradation_report`
turn it into the method, its fit, the notes and the reported degradation of
:func:`csakd_qgis.fusion.plan.prepare`, which puts them in its
:class:`~csakd_qgis.fusion.plan.FusionPlan`.

Conventions
-----------
* Shifts and offsets are ``(dx, dy)`` in LR pixels, the LR-HSI relative to
  the HR-MSI; ``read_shift`` is the part the reads apply
  (:func:`~csakd_qgis.geo.coregister.open_aligned`), the rest is left to
  the PSF fit (:data:`FIT_OFFSET_LIMIT`).
* Arrays are band-first and in physical units
  (:class:`~csakd_qgis.fusion.sample.SceneSample`); the degradation is
  estimated and the classical methods fitted on the sample mosaics
  divided by the radiometry's levels.
* Band indexes in notes are 1-based, those returned 0-based; the SNR is
  the LR-HSI's median over bands, in dB.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple, Union, cast

import numpy as np

from csakd_qgis.classical import ClassicalMethod, choose, fit_method, median_snr_db
from csakd_qgis.classical.consistency import MIN_RESIDUAL_PIXELS
from csakd_qgis.errors import ImplausibleOutputError, InputError
from csakd_qgis.estimation import Degradation, estimate_degradation, relabelled_bands
from csakd_qgis.fusion.methods import NETWORKS, FusionMethod, auto_network
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.sample import SceneSample, empty_bands, measure_radiometry, sample_scene
from csakd_qgis.geo.coregister import AlignedPair, measure_shift, warped_cache_mb
from csakd_qgis.geo.grid import GridPlan
from csakd_qgis.io.bands import RasterInfo
from csakd_qgis.io.read import BLOCK_CACHE_MB, MAX_BLOCK_CACHE_MB, gdal_block_cache
from csakd_qgis.options import FuseOptions
from csakd_qgis.progress import Reporter
from csakd_qgis.simulation.degradation import psf_sigma

#: Largest misregistration (LR pixels, on either axis) left to the PSF fit; a larger one is corrected by the reads.
#: The fit searches offsets up to 1 LR pixel (:func:`csakd_qgis.estimation.psf.estimate_psf`).
FIT_OFFSET_LIMIT = 0.9


#: ``opener(lr_info, shift)``: the inputs on the plan's grids
#: (:meth:`~csakd_qgis.fusion.plan.FusionPlan.open_pair` before the plan exists).
Opener = Callable[[RasterInfo, Tuple[float, float]], ContextManager[AlignedPair]]


def _estimate_shift(opener: Opener, lr_info: RasterInfo) -> Tuple[Tuple[float, float], bool, str]:
    """``((dx, dy), reliable, message)`` measured on a central sample; unreliable when it cannot be measured."""
    try:
        with opener(lr_info, (0.0, 0.0)) as pair:
            estimate = measure_shift(pair)
    except InputError as error:
        return (0.0, 0.0), False, f"shift not estimated: {error}"
    return (estimate.dx, estimate.dy), estimate.reliable, estimate.message


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


def msi_identity(degradation: Optional[Degradation], lr_info: RasterInfo, msi_info: RasterInfo, name: str,
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


@dataclass(frozen=True)
class Scene:
    """What :func:`~csakd_qgis.fusion.plan.prepare` measures on the pair before it chooses a method.

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


def measure_scene(opener: Opener, lr_info: RasterInfo, msi_info: RasterInfo, grids: GridPlan,
                  options: FuseOptions, reporter: Reporter) -> Scene:
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
    return Scene(lr_info, tuple(notes + more), reliable, message, measured, read_shift, sample, radiometry,
                  seconds, degradation, snr, grids.scale)


def resolve_auto(method: Union[str, FusionMethod], model: object, scene: Scene,
                 msi_info: RasterInfo) -> Tuple[str, object, List[str]]:
    """``(method name, model, notes)`` with ``"auto"`` resolved; ``""`` for a method object.

    ``auto`` takes a network whose card shows it beating the classical
    methods (:func:`~csakd_qgis.fusion.methods.auto_network`), else the
    classical method for the scene's SNR (:func:`~csakd_qgis.classical.choose`;
    a ``subspace_bp`` that finds nothing to back-project is chosen again by
    :func:`fit_classical`).
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


def fit_classical(name: str, scene: Scene, total: Tuple[float, float],
                  auto: bool = False) -> Tuple[ClassicalMethod, Tuple[float, float], List[str]]:
    """``(method, shift applied to the reads, notes)``: classical method ``name`` fitted on the normalised sample.

    The estimated PSF is used (the default when unreliable); the offset
    ``total`` (LR pixels) less what the reads apply goes into the fit
    instead of a resampling.  ``auto``: ``name`` is ``auto``'s provisional
    choice; a ``subspace_bp`` whose back-projection finds nothing to correct
    is chosen again (:func:`~csakd_qgis.classical.choose`), and PSF-matched
    GSA fitted instead where that rule says so.
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
    noise = None if degradation is None else degradation.noise_lr  # estimated on the normalised sample

    def fit(method: str) -> ClassicalMethod:
        return fit_method(method, sample.mosaic_lr / radiometry.lr_level, sample.mosaic_msi / radiometry.msi_level,
                          scene.scale, sigma, offset, [b.good for b in scene.lr_info.bands], noise)

    fusion = fit(name)
    consistency = getattr(fusion.model, "consistency", None)
    if consistency is not None and not consistency.active:
        again, reason = choose(scene.snr, back_projection_active=False) if auto else (name, "")
        notes.append(f"{name}: the back-projection found nothing to correct (the LR residual is within the noise, or "
                     f"fewer than {MIN_RESIDUAL_PIXELS} sample LR pixels have the context to measure it)"
                     + ("; the output is the plain subspace projection" if again == name else ""))
        if auto:
            notes.append(f"method auto, after the fit: {reason}")
        if again != name:
            name, fusion = again, fit(again)
    if offset != (0.0, 0.0):
        notes.append(f"offset ({offset[0]:+.3f}, {offset[1]:+.3f}) LR px taken into the fit of {name} "
                     "(the LR-HSI is not resampled: a resampling would blur it)")
    return fusion, scene.read_shift, notes


def degradation_report(scene: Scene, fusion: FusionMethod, estimate: Tuple[float, float],
                       applied: Tuple[float, float]) -> Dict[str, Any]:
    """The plan's degradation report: the estimate with the offset left to the reads, the SNR and the rank.

    Stored as :attr:`~csakd_qgis.fusion.plan.FusionPlan.degradation`.
    """
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
