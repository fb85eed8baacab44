"""Sentinel-2 Level-2A SAFE products: the four 10 m bands -> VRT, the scene classification -> mask.

Accepted: the ``.SAFE`` folder, its ``MTD_MSIL2A.xml``, or the downloaded
``.zip`` (read in place through GDAL's ``/vsizip/``).  The VRT points at the
JPEG 2000 files ``GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2`` (B03, B04, B08)
directly, in wavelength order B2, B3, B4, B8 (GDAL's SENTINEL2 driver
would give B4, B3, B2, B8).

Reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE: scale
``1/Q`` and offset ``BOA_ADD_OFFSET/Q`` per band (offset -1000 since
processing baseline 04.00, absent before).  DN 0 is nodata.  Centre
wavelengths come from the XML's ``Spectral_Information`` when present, else
from the spacecraft's table below.  The mask is the 20 m scene
classification (``*_SCL_20m.jp2``) classes in :data:`SCL_EXCLUDED`, written
at 20 m and put on the 10 m grid by a nearest-neighbour VRT.
"""

from __future__ import annotations

import fnmatch
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from csakd_qgis.errors import InputError
from csakd_qgis.products.common import (
    PixelGrid,
    ResolvedInput,
    SourceBand,
    band_summary,
    cache_folder,
    local_name,
    parse_xml,
    scale_summary,
    write_mask,
    write_vrt,
)

NAME = "Sentinel-2 L2A"

#: The bands read, in wavelength order.
BANDS = ("B2", "B3", "B4", "B8")

#: MSI band names in the order of the XML's ``band_id`` 0..12.
BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

#: Centre wavelength and bandwidth (nm) of the 10 m bands per spacecraft (ESA spectral response functions).
#: Sentinel-2C has no entry: its products carry the values in the XML; without them S2A's are used.
WAVELENGTHS: Dict[str, Dict[str, Tuple[float, float]]] = {
    "S2A": {"B2": (492.4, 66.0), "B3": (559.8, 36.0), "B4": (664.6, 31.0), "B8": (832.8, 106.0)},
    "S2B": {"B2": (492.1, 66.0), "B3": (559.0, 36.0), "B4": (665.0, 31.0), "B8": (833.0, 106.0)},
}

#: Scene classification classes excluded: no data, saturated/defective, cloud shadow,
#: cloud medium and high probability, thin cirrus, snow/ice.
SCL_EXCLUDED = (0, 1, 3, 8, 9, 10, 11)

#: BOA_QUANTIFICATION_VALUE when the XML lacks it.
DEFAULT_QUANTIFICATION = 10000.0

_METADATA = "MTD_MSIL2A.xml"


def matches(path: str, is_dir: bool) -> bool:
    """Whether ``path`` looks like a Sentinel-2 L2A product (names and one folder listing only)."""
    name = os.path.basename(os.path.normpath(path))
    if is_dir:
        return (name.upper().endswith(".SAFE") and "MSIL2A" in name.upper()) or \
            os.path.exists(os.path.join(path, _METADATA))
    upper = name.upper()
    return upper == _METADATA.upper() or (upper.endswith(".ZIP") and "MSIL2A" in upper)


class _Product:
    """The files of one product: member names and how to read them, from a folder or a zip."""

    def __init__(self, path: str) -> None:
        path = os.path.abspath(path)
        if os.path.isfile(path) and path.lower().endswith(".zip"):
            self.key_file = path
            try:
                with zipfile.ZipFile(path) as archive:
                    self.names = archive.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"cannot read the Sentinel-2 archive {path!r}: {exc}. Download it again.") from exc
            self.prefix = f"/vsizip/{path}/"
            self.zip: Optional[str] = path
        else:
            root = path if os.path.isdir(path) else os.path.dirname(path)
            self.names = [os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                          for folder, _, names in os.walk(root) for name in names]
            self.prefix = root.rstrip("/") + "/"
            self.zip = None
            self.key_file = os.path.join(root, _METADATA)
            path = root
        self.where = path

    def find(self, pattern: str, what: str) -> str:
        """The one member matching ``pattern`` (fnmatch, case-insensitive); :class:`InputError` if none or many."""
        found = [n for n in self.names if fnmatch.fnmatch(n.lower(), pattern.lower())]
        if len(found) != 1:
            problem = "has no" if not found else f"has {len(found)} files for"
            raise InputError(
                f"Sentinel-2 product {self.where!r} {problem} {what} ({pattern}): pass one complete L2A product "
                "(the .SAFE folder or the .zip as downloaded)."
            )
        return found[0]

    def gdal_name(self, member: str) -> str:
        return self.prefix + member

    def read(self, member: str) -> bytes:
        if self.zip:
            with zipfile.ZipFile(self.zip) as archive:
                return archive.read(member)
        return Path(self.prefix + member).read_bytes()


@dataclass(frozen=True)
class _Metadata:
    """What MTD_MSIL2A.xml says: spacecraft name, quantification, add offsets and centre wavelengths by band."""

    spacecraft: str
    quantification: float
    offsets: Dict[str, float]
    central: Dict[str, float]


def _metadata(text: bytes, where: str) -> _Metadata:
    """Spacecraft, quantification, per-band add offsets and XML wavelengths from MTD_MSIL2A.xml."""
    root = parse_xml(where, text)
    spacecraft = ""
    quantification = DEFAULT_QUANTIFICATION
    offsets: Dict[str, float] = {}
    central: Dict[str, float] = {}
    for element in root.iter():
        tag = local_name(element.tag)
        if tag == "SPACECRAFT_NAME" and element.text:
            spacecraft = element.text.strip()
        elif tag == "BOA_QUANTIFICATION_VALUE" and element.text:
            quantification = float(element.text)
        elif tag == "BOA_ADD_OFFSET" and element.text and element.get("band_id", "").isdigit():
            band_id = int(element.get("band_id", ""))
            if band_id < len(BAND_IDS):
                offsets[BAND_IDS[band_id]] = float(element.text)
        elif tag == "Spectral_Information":
            value = next((e.text for e in element.iter() if local_name(e.tag) == "CENTRAL"), None)
            band = element.get("physicalBand", "")
            if value and band:
                central[band] = float(value)
    return _Metadata(spacecraft, quantification, offsets, central)


def _table(spacecraft: str) -> Tuple[str, Dict[str, Tuple[float, float]]]:
    """``(key, table)`` of :data:`WAVELENGTHS` for a spacecraft name such as ``"Sentinel-2B"``."""
    key = "S2" + spacecraft.strip()[-1:].upper() if spacecraft else "S2A"
    return (key, WAVELENGTHS[key]) if key in WAVELENGTHS else ("S2A", WAVELENGTHS["S2A"])


def resolve(path: str, cache_dir: Optional[str] = None) -> ResolvedInput:
    """Turn a Sentinel-2 L2A product into a 4-band 10 m VRT and an SCL mask in the cache folder.

    Raises
    ------
    InputError
        When MTD_MSIL2A.xml, a 10 m band or the SCL layer is missing.
    """
    product = _Product(path)
    member = product.find(f"*{_METADATA}", _METADATA)
    meta = _metadata(product.read(member), product.gdal_name(member))
    q, offsets, central = meta.quantification, meta.offsets, meta.central
    table_key, table = _table(meta.spacecraft)
    files = {band: product.gdal_name(product.find(f"*/IMG_DATA/R10m/*_B{band[1:]:0>2}_10m.jp2", f"band {band}"))
             for band in BANDS}
    scl = product.gdal_name(product.find("*/IMG_DATA/R20m/*_SCL_20m.jp2", "the scene classification (SCL)"))
    grid = PixelGrid.of(files["B2"])
    bands: List[SourceBand] = []
    for band in BANDS:
        wavelength = central.get(band, table[band][0])
        bands.append(SourceBand(filename=files[band], band=1, size=(grid.width, grid.height),
                                wavelength_nm=wavelength, fwhm_nm=table[band][1], scale=1.0 / q,
                                offset=offsets.get(band, 0.0) / q, description=f"{band} ({wavelength:g} Nanometers)"))
    for band in BANDS[1:]:
        if PixelGrid.of(files[band]) != grid:
            raise InputError(f"{files[band]} is not on the grid of {files['B2']}: the product is damaged; "
                             "download it again.")
    cache = cache_folder("sentinel2", product.key_file, cache_dir)
    stem = Path(product.where).name.split(".")[0]
    vrt = cache / f"{stem}_10m.vrt"
    write_vrt(vrt, grid, "UInt16", 0.0, bands)
    scl_grid = PixelGrid.of(scl)
    mask20 = cache / f"{stem}_SCL_mask_20m.tif"
    if not mask20.exists():
        write_mask(mask20, scl_grid, [(scl, _excluded_class)])
    mask = cache / f"{stem}_mask_10m.vrt"
    write_vrt(mask, grid, "Byte", None,
              [SourceBand(filename=str(mask20), band=1, size=(scl_grid.width, scl_grid.height),
                          description="SCL mask (1 = exclude)")])
    source = "XML Spectral_Information" if all(b in central for b in BANDS) else f"{table_key} table"
    return ResolvedInput(path=str(vrt), mask=str(mask), product=NAME, log=(
        f"{NAME}: {product.where} ({meta.spacecraft or 'spacecraft unknown'})",
        f"{NAME}: {', '.join(BANDS)} at 10 m, {band_summary(bands)} (wavelengths from {source}); "
        f"{scale_summary(bands)} (quantification {q:g}, add offsets "
        f"{', '.join(f'{offsets.get(b, 0.0):g}' for b in BANDS)}); nodata 0",
        f"{NAME}: mask = SCL classes {', '.join(map(str, SCL_EXCLUDED))} (20 m, nearest to 10 m)",
        f"{NAME}: VRT {vrt}",
    ))


def _excluded_class(values: np.ndarray) -> np.ndarray:
    return np.isin(values[0], SCL_EXCLUDED)
