"""The inputs as the user names them -> what the engine reads: products resolved, masks, MSI band identity.

:func:`resolve_pair` runs each input through
:func:`csakd_qgis.products.resolve_input` (a product becomes a VRT/GeoTIFF
with band metadata and, where it has one, a mask; an ordinary raster comes
back unchanged) and collects the masks of each input: the user's and the
product's, either one excluding a pixel.  It runs once, at the engine's
boundary (:func:`csakd_qgis.fusion.plan.prepare`), so the
:class:`~csakd_qgis.fusion.plan.FusionPlan` the Dask workers get names
the resolved rasters.

:func:`with_msi_bands` fills in the HR-MSI's band wavelengths from a
:class:`~csakd_qgis.options.MsiBands` identity, and :func:`network_msi_order`
finds the band order a network expects when the HR-MSI holds its bands in
another order; :func:`reorder` applies it to the band information (the
reads take the same order, :class:`~csakd_qgis.geo.coregister.AlignedPair`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from csakd_qgis.errors import InputError
from csakd_qgis.io.bands import BandInfo, RasterInfo
from csakd_qgis.options import MsiBands
from csakd_qgis.products import resolve_input

#: Largest difference (nm) between a band centre the metadata gives and the one the MSI options give.
IDENTITY_TOLERANCE_NM = 20.0


@dataclass(frozen=True)
class ResolvedPair:
    """The two inputs ready for GDAL.

    Attributes
    ----------
    lr_hsi, hr_msi:
        Paths GDAL opens (a product's VRT/GeoTIFF, or the path as given).
    lr_masks, msi_masks:
        Rasters of pixels to exclude (nonzero), each on its input's grid:
        the one given by the user, then the product's.
    notes:
        What was read, prefixed by the input's role, for the run's report.
    """

    lr_hsi: str
    hr_msi: str
    lr_masks: Tuple[str, ...] = ()
    msi_masks: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()


def resolve_one(path: str, role: str, mask: Optional[str] = None,
                cache_dir: Optional[str] = None) -> Tuple[str, Tuple[str, ...], List[str]]:
    """``(path GDAL opens, masks, notes)`` for one input; ``role`` (e.g. ``"LR-HSI"``) prefixes the notes.

    Raises
    ------
    InputError
        A recognised product lacks a file it needs.
    """
    resolved = resolve_input(str(path), cache_dir)
    notes = [f"{role}: {line}" for line in resolved.log]
    masks = tuple(str(m) for m in (mask, resolved.mask) if m)
    if mask:
        notes.append(f"{role}: pixels where {mask} is nonzero are excluded")
    return resolved.path, masks, notes


def resolve_pair(lr_hsi: str, hr_msi: str, *, lr_mask: Optional[str] = None, msi_mask: Optional[str] = None,
                 cache_dir: Optional[str] = None) -> ResolvedPair:
    """Resolve both inputs (:func:`resolve_one`); ``lr_mask``/``msi_mask`` are the user's masks (nonzero = exclude).

    ``cache_dir`` is where product VRTs and masks are written (None:
    :func:`csakd_qgis.products.default_cache_root`).
    """
    lr, lr_masks, lr_notes = resolve_one(lr_hsi, "LR-HSI", lr_mask, cache_dir)
    msi, msi_masks, msi_notes = resolve_one(hr_msi, "HR-MSI", msi_mask, cache_dir)
    return ResolvedPair(lr, msi, lr_masks, msi_masks, tuple(lr_notes + msi_notes))


def identity_centres(identity: MsiBands) -> Tuple[List[float], List[Optional[float]], str]:
    """``(centres nm, FWHMs nm or None, label)`` of the bands ``identity`` names, in the raster's order."""
    if identity.sensor:
        from csakd_qgis.simulation.srf import sensor_bands

        table = sensor_bands(identity.sensor, identity.bands, source="table")
        return (list(table.centres_nm), list(table.fwhm_nm),
                f"--msi-sensor {identity.sensor} --msi-bands {','.join(identity.bands)}")
    fwhm: List[Optional[float]] = list(identity.fwhm_nm) or [None] * identity.count
    return list(identity.wavelengths_nm), fwhm, "--msi-wavelengths"


def with_msi_bands(info: RasterInfo, identity: Optional[MsiBands]) -> Tuple[RasterInfo, List[str]]:
    """``(info with MSI band centres filled in, notes)``: the metadata's centres are kept where it has them.

    Raises
    ------
    InputError
        ``identity`` names another number of bands than the raster has, or
        a centre more than :data:`IDENTITY_TOLERANCE_NM` from the metadata's.
    """
    if identity is None:
        return info, []
    centres, fwhms, label = identity_centres(identity)
    if len(centres) != info.count:
        raise InputError(f"{label} describes {len(centres)} bands, but the HR-MSI {info.path} has {info.count}")
    bands, filled = [], []
    for number, (band, centre, fwhm) in enumerate(zip(info.bands, centres, fwhms), start=1):
        if band.wavelength_nm is None:
            bands.append(dataclasses.replace(band, wavelength_nm=centre, fwhm_nm=band.fwhm_nm or fwhm))
            filled.append(f"{centre:.0f}")
            continue
        if abs(band.wavelength_nm - centre) > IDENTITY_TOLERANCE_NM:
            raise InputError(f"{label} puts HR-MSI band {number} at {centre:.0f} nm, but its metadata says "
                             f"{band.wavelength_nm:.0f} nm: give the bands in the raster's order")
        bands.append(band)
    if not filled:
        return info, [f"HR-MSI band wavelengths from the metadata agree with {label}"]
    return (dataclasses.replace(info, bands=tuple(bands)),
            [f"HR-MSI band wavelengths from {label}: {', '.join(filled)} nm"])


def reorder(info: RasterInfo, order: Sequence[int]) -> RasterInfo:
    """``info`` with its bands (metadata, scales, offsets) in ``order`` (1-based band numbers)."""
    return dataclasses.replace(info, count=len(order), bands=tuple(info.bands[b - 1] for b in order),
                               scales=tuple(info.scales[b - 1] for b in order),
                               offsets=tuple(info.offsets[b - 1] for b in order))


def network_msi_order(model: object, method: str, lr_bands: Sequence[BandInfo],
                      msi_wavelengths: Sequence[Optional[float]],
                      scale: int) -> Optional[Tuple[Tuple[int, ...], str]]:
    """``(1-based HR-MSI band order, model name)`` when a network fits the inputs once their bands are reordered.

    Only for network methods (``csakd``, ``student``, ``teacher``, ``auto``)
    and a model given by name or file, or the installed ones (``model``
    None/``"auto"``), and only when every MSI band's centre is known and
    each of the model's bands matches exactly one of them
    (:func:`csakd_qgis.models.store.msi_band_order`).  None otherwise: the
    model check then says what does not fit.
    """
    from csakd_qgis.fusion.methods import AUTO, NETWORKS
    from csakd_qgis.models.onnx_runtime import is_onnx, read_onnx_card
    from csakd_qgis.models.store import list_models, mismatches, msi_band_order, resolve_model

    named = isinstance(model, (str, os.PathLike, type(None)))
    if method not in NETWORKS + ("auto",) or None in msi_wavelengths or not named:
        return None
    role = "teacher" if method == "teacher" else "student"
    if model in AUTO:
        cards = [card for _, card in list_models() if card.role == role]
    else:
        cards = [read_onnx_card(str(model)) if is_onnx(model) else resolve_model(str(model))[1]]
    lr_wavelengths = [b.wavelength_nm for b in lr_bands]
    for card in cards:
        order = msi_band_order(card, msi_wavelengths)
        if order is None:
            continue
        ordered = [msi_wavelengths[b - 1] for b in order]
        if not mismatches(card, lr_wavelengths, len(order), ordered, scale):
            return tuple(order), card.name
    return None
