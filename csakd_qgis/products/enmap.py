"""EnMAP Level-2A (DLR) products: spectral image + METADATA.XML -> VRT with band metadata and a mask.

Accepted: the product folder, its ``*-METADATA.XML`` or its
``*-SPECTRAL_IMAGE.TIF`` (GeoTIFF delivery; the ENVI ``.BSQ``/``.BIL``/``.BIP``
deliveries work too).  Per band the XML's
``specific/bandCharacterisation/bandID`` gives ``wavelengthCenterOfBand``,
``FWHMOfBand``, ``GainOfBand`` and ``OffsetOfBand`` (reflectance =
DN * gain + offset).  Bands that hold nothing but nodata in a sampled read
(the water-vapour bands EnMAP fills) are flagged bad (``bbl = 0``), not
dropped, so band numbers stay those of the product.  The mask is the union
of ``QL_PIXELMASK`` (nonzero in any band) and the ``QL_QUALITY_CLOUD``,
``CIRRUS``, ``HAZE``, ``SNOW`` and ``CLOUDSHADOW`` layers (nonzero).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from rasterio.enums import Resampling

from csakd_qgis.errors import InputError
from csakd_qgis.io.read import open_raster
from csakd_qgis.products.common import (
    GDAL_TYPES,
    PixelGrid,
    ResolvedInput,
    SourceBand,
    band_summary,
    cache_folder,
    parse_xml,
    scale_summary,
    write_mask,
    write_vrt,
)

NAME = "EnMAP L2A"

#: Image file extensions of the GeoTIFF and ENVI deliveries.
_IMAGE_EXTENSIONS = (".TIF", ".TIFF", ".BSQ", ".BIL", ".BIP")

#: Quality layers whose nonzero pixels are excluded.
MASK_LAYERS = ("QL_PIXELMASK", "QL_QUALITY_CLOUD", "QL_QUALITY_CIRRUS", "QL_QUALITY_HAZE", "QL_QUALITY_SNOW",
               "QL_QUALITY_CLOUDSHADOW")

#: Nodata of the L2A spectral image when the file does not declare one.
DEFAULT_NODATA = -32768.0

#: Side (pixels) of the sampled read that finds all-nodata bands.
SAMPLE_SIDE = 128

_LEVEL = re.compile(r"L(1B|1C|2A)-", re.IGNORECASE)


def _stem_key(name: str) -> Optional[str]:
    """``"METADATA"``, ``"SPECTRAL_IMAGE"``, ``"QL_..."`` for an EnMAP file name, else None."""
    stem, ext = os.path.splitext(name.upper())
    if ext == ".XML" and stem.endswith("METADATA"):
        return "METADATA"
    if ext in _IMAGE_EXTENSIONS:
        for key in ("SPECTRAL_IMAGE",) + MASK_LAYERS:
            if stem.endswith(key):
                return key
    return None


def matches(path: str, is_dir: bool) -> bool:
    """Whether ``path`` looks like an EnMAP product (folder listing or file name only)."""
    if is_dir:
        keys = {_stem_key(name) for name in os.listdir(path)}
        return "SPECTRAL_IMAGE" in keys and "METADATA" in keys
    name = os.path.basename(path).upper()
    return name.startswith("ENMAP") and _stem_key(name) in ("METADATA", "SPECTRAL_IMAGE")


def _files(folder: str) -> Dict[str, str]:
    files: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        key = _stem_key(name)
        if key and key not in files:
            files[key] = os.path.join(os.path.abspath(folder), name)
    return files


def _band_table(xml_path: str) -> List[Dict[str, float]]:
    """``[{wavelength, fwhm, gain, offset}, ...]`` in band order from the METADATA.XML."""
    root = parse_xml(xml_path)
    rows: List[Tuple[int, Dict[str, float]]] = []
    for element in root.iter("bandID"):
        values = {key: element.findtext(tag) for key, tag in (
            ("wavelength", "wavelengthCenterOfBand"), ("fwhm", "FWHMOfBand"),
            ("gain", "GainOfBand"), ("offset", "OffsetOfBand"))}
        try:
            row = {key: float(text) for key, text in values.items() if text is not None}
            number = int(element.get("number", len(rows) + 1))
        except ValueError as exc:
            raise InputError(f"{xml_path}: band {element.get('number')} has a malformed value: {exc}.") from exc
        if "wavelength" not in row:
            raise InputError(f"{xml_path}: band {number} has no wavelengthCenterOfBand; download the product again.")
        rows.append((number, row))
    if not rows:
        raise InputError(
            f"{xml_path} has no specific/bandCharacterisation/bandID entries: it is not an EnMAP L2A METADATA.XML."
        )
    return [row for _, row in sorted(rows, key=lambda item: item[0])]


def _empty_bands(image: str, nodata: float) -> List[bool]:
    """Per band, whether a sampled read finds nothing but nodata in it."""
    with open_raster(image) as ds:
        shape = (ds.count, min(SAMPLE_SIDE, ds.height), min(SAMPLE_SIDE, ds.width))
        sample = ds.read(out_shape=shape, resampling=Resampling.nearest)
    return [bool(np.all(band == nodata)) for band in sample]


def resolve(path: str, cache_dir: Optional[str] = None) -> ResolvedInput:
    """Turn an EnMAP L2A product into a VRT (and a mask GeoTIFF) in the cache folder.

    Raises
    ------
    InputError
        When the METADATA.XML or spectral image is missing, the product is
        Level 1 (radiance), or the XML's band count differs from the image's.
    """
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    files = _files(folder)
    for key, what in (("METADATA", "*-METADATA.XML"), ("SPECTRAL_IMAGE", "*-SPECTRAL_IMAGE.TIF")):
        if key not in files:
            raise InputError(
                f"EnMAP product {folder!r} has no {what}: pass the whole unzipped L2A product folder "
                "(the spectral image, METADATA.XML and the QL_* quality layers side by side)."
            )
    xml_path, image = files["METADATA"], files["SPECTRAL_IMAGE"]
    level = _LEVEL.search(os.path.basename(image))
    if level and level.group(1).upper() != "2A":
        raise InputError(
            f"{image} is EnMAP Level {level.group(1).upper()} (radiance); the fusion needs surface reflectance: "
            "order the Level-2A product."
        )
    table = _band_table(xml_path)
    with open_raster(image) as ds:
        count, dtype = ds.count, ds.dtypes[0]
        nodata = DEFAULT_NODATA if ds.nodata is None else float(ds.nodata)
    if count != len(table):
        raise InputError(
            f"{xml_path} describes {len(table)} bands but {image} has {count}: they belong to different "
            "products or one is damaged; download the product again."
        )
    grid = PixelGrid.of(image)
    empty = _empty_bands(image, nodata)
    bands = [
        SourceBand(filename=image, band=i + 1, size=(grid.width, grid.height), wavelength_nm=row["wavelength"],
                   fwhm_nm=row.get("fwhm"), good=not is_empty, scale=row.get("gain", 1.0e-4),
                   offset=row.get("offset", 0.0), description=f"band {i + 1} ({row['wavelength']:g} Nanometers)")
        for i, (row, is_empty) in enumerate(zip(table, empty))
    ]
    cache = cache_folder("enmap", xml_path, cache_dir)
    vrt = cache / (Path(image).stem + ".vrt")
    write_vrt(vrt, grid, GDAL_TYPES[dtype], nodata, bands)
    log = [f"{NAME}: {image}", f"{NAME}: {band_summary(bands)}; {scale_summary(bands)}; nodata {nodata:g}"]
    if not all("gain" in row for row in table):
        log.append(f"{NAME}: GainOfBand missing in the XML for some bands; used 1e-4 (L2A reflectance x 10000)")
    layers = [key for key in MASK_LAYERS if key in files]
    missing = [key for key in MASK_LAYERS if key not in files]
    mask = None
    if layers:
        mask = cache / (Path(image).stem.replace("SPECTRAL_IMAGE", "MASK") + "_mask.tif")
        if not mask.exists():
            write_mask(mask, grid, [(files[key], _nonzero_in_any_band) for key in layers])
        log.append(f"{NAME}: mask = nonzero in {', '.join(layers)}")
    if missing:
        log.append(f"{NAME}: quality layers not found, not masked: {', '.join(missing)}")
    log.append(f"{NAME}: VRT {vrt}")
    return ResolvedInput(path=str(vrt), mask=None if mask is None else str(mask), product=NAME, log=tuple(log))


def _nonzero_in_any_band(values: np.ndarray) -> np.ndarray:
    return np.any(values != 0, axis=0)

