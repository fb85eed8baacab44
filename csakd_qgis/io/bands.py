"""Spectral band metadata of rasters: what GDAL's metadata says about each band, read and written.

Conventions
-----------
* Wavelengths and FWHM are in nanometres.  They are read, in this order, from
  per-band items ``wavelength``/``fwhm``/``bbl`` (with ``wavelength_units`` on
  the band or the dataset), the IMAGERY domain (``CENTRAL_WAVELENGTH_UM``,
  ``FWHM_UM``), the ENVI domain (``wavelength = {..}``, ``fwhm``, ``bbl``,
  ``wavelength_units``) and band descriptions such as ``"376.44 Nanometers"``.
  When no unit is given, values all below 100 are taken as micrometres.
* An alpha band (colour interpretation ``alpha``) is a mask, not data: it is
  left out of :attr:`RasterInfo.count` and of band numbering.
* Written outputs carry the same items per band and in the ENVI domain
  (:func:`band_tags`, :func:`envi_tags`), so wavelengths survive processing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import affine
import numpy as np
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Interleaving
from rasterio.io import DatasetReaderBase

from csakd_qgis.errors import RasterReadError

#: Factors from a wavelength unit (lower case, as found in metadata) to nanometres.
_UNIT_TO_NM = {
    "nanometers": 1.0, "nanometer": 1.0, "nanometres": 1.0, "nanometre": 1.0, "nm": 1.0,
    "micrometers": 1000.0, "micrometer": 1000.0, "micrometres": 1000.0, "micrometre": 1000.0,
    "microns": 1000.0, "micron": 1000.0, "um": 1000.0, "µm": 1000.0, "μm": 1000.0,
    "millimeters": 1.0e6, "millimetres": 1.0e6, "mm": 1.0e6,
}


_DESCRIPTION_WAVELENGTH = re.compile(
    r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*(nanometers?|nanometres?|nm|micrometers?|micrometres?"
    r"|microns?|um|µm|μm)\b",
    re.IGNORECASE,
)


#: Values of a wavelength list without unit are micrometres when all lie below this.
_MICROMETRE_HEURISTIC_LIMIT = 100.0


@dataclass(frozen=True)
class BandInfo:
    """One band's spectral metadata.

    Attributes
    ----------
    wavelength_nm:
        Centre wavelength in nanometres (converted from µm when the metadata
        says micrometres), or None when unknown.
    fwhm_nm:
        Full width at half maximum in nanometres, or None.
    good:
        ENVI ``bbl``: False marks a bad band (water vapour, dead detector).
    description:
        GDAL band description (may be empty).
    """

    wavelength_nm: Optional[float] = None
    fwhm_nm: Optional[float] = None
    good: bool = True
    description: str = ""


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about a raster, without its pixels.

    ``count`` excludes an alpha band; ``bands``, ``scales`` and ``offsets``
    have ``count`` entries.  ``transform`` maps pixel (col, row) to map
    coordinates in ``crs``; ``crs`` is None for rasters without one.
    ``block`` is the first band's storage block ``(rows, cols)`` in pixels
    (a strip of ``(rows, width)`` for an untiled file).  ``shared_blocks``
    is True when one storage block holds every band (GDAL's
    ``INTERLEAVE=PIXEL``, and any format whose interleaving GDAL does not
    report), so that reading one band decodes all of them; False for
    band-interleaved files, whose bands are stored in blocks of their own.
    """

    path: str
    width: int
    height: int
    count: int
    crs: Optional[CRS]
    transform: affine.Affine
    dtype: str
    nodata: Optional[float]
    bands: Tuple[BandInfo, ...]
    scales: Tuple[float, ...]
    offsets: Tuple[float, ...]
    block: Tuple[int, int] = (256, 256)
    shared_blocks: bool = True

    def block_row_bytes(self, width: int, height: int) -> int:
        """Decoded bytes of every block, all bands, that a ``width x height`` pixel window can touch.

        The window touches at most ``ceil(width / cols) + 1`` blocks across
        and ``ceil(height / rows) + 1`` down, whatever its position.
        """
        rows, cols = self.block
        across = -(-min(width, self.width) // cols) + 1
        down = -(-min(height, self.height) // rows) + 1
        return across * down * rows * cols * self.count * np.dtype(self.dtype).itemsize

    @property
    def res(self) -> Tuple[float, float]:
        """Pixel size ``(xres, yres)``, positive, in CRS units."""
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    @property
    def bounds(self) -> Tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the raster's footprint in CRS units."""
        t = self.transform
        corners = [t * (col, row) for col in (0, self.width) for row in (0, self.height)]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return (min(xs), min(ys), max(xs), max(ys))


def data_band_indexes(ds: DatasetReaderBase) -> List[int]:
    """1-based GDAL indexes of the data bands (every band but an alpha band)."""
    return [i for i, ci in zip(ds.indexes, ds.colorinterp) if ci != ColorInterp.alpha]


def _envi_list(text: Optional[str]) -> Optional[List[str]]:
    """Split an ENVI list ``"{a, b, c}"`` into its stripped items."""
    if not text:
        return None
    items = [item.strip() for item in text.strip().strip("{}").split(",")]
    return [item for item in items if item]


def _to_float(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _unit_factor(unit: Optional[str]) -> Optional[float]:
    """Nanometres per unit, or None when ``unit`` is absent or unknown."""
    if not unit:
        return None
    return _UNIT_TO_NM.get(unit.strip().lower())


def _nm_factor(unit: Optional[str], wavelengths: Sequence[Optional[float]]) -> float:
    """Nanometres per metadata unit; without a unit, all-below-100 wavelengths are micrometres."""
    factor = _unit_factor(unit)
    if factor is not None:
        return factor
    known = [abs(w) for w in wavelengths if w is not None]
    return 1000.0 if known and max(known) < _MICROMETRE_HEURISTIC_LIMIT else 1.0


def _scaled(values: Sequence[Optional[float]], factor: float) -> List[Optional[float]]:
    return [None if v is None else v * factor for v in values]


def band_metadata(ds: DatasetReaderBase, indexes: Sequence[int]) -> Tuple[BandInfo, ...]:
    """Spectral metadata of the bands ``indexes`` from every place GDAL exposes it."""
    n = len(indexes)
    descriptions = [ds.descriptions[i - 1] or "" for i in indexes]
    band_tags = [ds.tags(i) for i in indexes]
    dataset_unit = ds.tags().get("wavelength_units")
    envi = ds.tags(ns="ENVI") if "ENVI" in (ds.tag_namespaces() or []) else {}
    envi_unit = envi.get("wavelength_units") or dataset_unit

    wavelengths: List[Optional[float]] = [None] * n
    fwhms: List[Optional[float]] = [None] * n
    good = [True] * n

    # 1. per-band items (EnMAP-Box, GDAL >= 3.x GTiff writers, our own writer)
    if any("wavelength" in tags for tags in band_tags):
        units = [tags.get("wavelength_units") or dataset_unit for tags in band_tags]
        common = units[0] if len(set(units)) == 1 else None
        raw_w = [_to_float(tags.get("wavelength")) for tags in band_tags]
        raw_f = [_to_float(tags.get("fwhm")) for tags in band_tags]
        if common is not None or all(u is None for u in units):
            factors = [_nm_factor(common, raw_w)] * n
        else:
            factors = [_nm_factor(u, [w]) for u, w in zip(units, raw_w)]
        wavelengths = [None if w is None else w * f for w, f in zip(raw_w, factors)]
        fwhms = [None if w is None else w * f for w, f in zip(raw_f, factors)]
    # 2. IMAGERY domain (GDAL >= 3.10), always micrometres
    if all(w is None for w in wavelengths):
        imagery = [ds.tags(i, ns="IMAGERY") if "IMAGERY" in (ds.tag_namespaces(i) or []) else {}
                   for i in indexes]
        if any("CENTRAL_WAVELENGTH_UM" in tags for tags in imagery):
            wavelengths = _scaled([_to_float(t.get("CENTRAL_WAVELENGTH_UM")) for t in imagery], 1000.0)
            fwhms = _scaled([_to_float(t.get("FWHM_UM")) for t in imagery], 1000.0)
    # 3. ENVI domain lists on the dataset, indexed by GDAL band number
    envi_w, envi_f = _envi_list(envi.get("wavelength")), _envi_list(envi.get("fwhm"))
    if envi_w and len(envi_w) >= max(indexes):
        raw_w = [_to_float(envi_w[i - 1]) for i in indexes]
        factor = _nm_factor(envi_unit, raw_w)
        if all(w is None for w in wavelengths):
            wavelengths = _scaled(raw_w, factor)
        if all(f is None for f in fwhms) and envi_f and len(envi_f) >= max(indexes):
            fwhms = _scaled([_to_float(envi_f[i - 1]) for i in indexes], factor)
    # 4. band descriptions such as "376.44 Nanometers" or "band 1 (418.24 Nanometers)"
    if all(w is None for w in wavelengths):
        for k, text in enumerate(descriptions):
            match = _DESCRIPTION_WAVELENGTH.search(text)
            if match:
                wavelengths[k] = float(match.group(1)) * (_unit_factor(match.group(2)) or 1.0)

    # bad-band list: per band first, then the ENVI list
    envi_bbl = _envi_list(envi.get("bbl"))
    for k, (i, tags) in enumerate(zip(indexes, band_tags)):
        flag = tags.get("bbl")
        if flag is None and envi_bbl and len(envi_bbl) >= i:
            flag = envi_bbl[i - 1]
        value = _to_float(flag)
        if value is not None:
            good[k] = value != 0
    return tuple(
        BandInfo(wavelength_nm=w, fwhm_nm=f, good=g, description=d)
        for w, f, g, d in zip(wavelengths, fwhms, good, descriptions)
    )


def info_from_dataset(ds: DatasetReaderBase, path: str) -> RasterInfo:
    """The :class:`RasterInfo` of an open dataset (``path`` names it in errors); no pixel is read."""
    indexes = data_band_indexes(ds)
    if not indexes:
        raise RasterReadError(f"raster {path!r} has no data band (only an alpha band).")
    scales = tuple(float(ds.scales[i - 1]) if ds.scales[i - 1] else 1.0 for i in indexes)
    offsets = tuple(float(ds.offsets[i - 1] or 0.0) for i in indexes)
    return RasterInfo(
        path=path,
        width=ds.width,
        height=ds.height,
        count=len(indexes),
        crs=ds.crs if ds.crs else None,
        transform=ds.transform,
        dtype=ds.dtypes[indexes[0] - 1],
        nodata=None if ds.nodata is None else float(ds.nodata),
        bands=band_metadata(ds, indexes),
        scales=scales,
        offsets=offsets,
        block=_block(ds.block_shapes[indexes[0] - 1]),
        shared_blocks=len(indexes) > 1 and ds.interleaving != Interleaving.band,
    )


def _block(shape: Sequence[int]) -> Tuple[int, int]:
    rows, cols = shape
    return int(rows), int(cols)


def band_tags(band: BandInfo) -> Dict[str, str]:
    """Default-domain items of one written band: ``bbl``, and ``wavelength``/``fwhm`` (nm) when known."""
    tags: Dict[str, str] = {"bbl": "1" if band.good else "0"}
    if band.wavelength_nm is not None:
        tags["wavelength"] = repr(float(band.wavelength_nm))
        tags["wavelength_units"] = "Nanometers"
    if band.fwhm_nm is not None:
        tags["fwhm"] = repr(float(band.fwhm_nm))
    return tags


def envi_tags(bands: Sequence[BandInfo]) -> Dict[str, str]:
    """ENVI-domain lists of a written raster: ``bbl``, and ``wavelength``/``fwhm`` when every band has one."""
    tags: Dict[str, str] = {"bbl": "{" + ", ".join("1" if b.good else "0" for b in bands) + "}"}
    wavelengths = [b.wavelength_nm for b in bands if b.wavelength_nm is not None]
    if len(wavelengths) == len(bands):
        tags["wavelength"] = "{" + ", ".join(repr(float(w)) for w in wavelengths) + "}"
        tags["wavelength_units"] = "Nanometers"
    fwhm = [b.fwhm_nm for b in bands if b.fwhm_nm is not None]
    if len(fwhm) == len(bands):
        tags["fwhm"] = "{" + ", ".join(repr(float(f)) for f in fwhm) + "}"
    return tags
