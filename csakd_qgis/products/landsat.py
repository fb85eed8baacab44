"""Landsat 8/9 Collection 2 Level-2 products: SR_B2..SR_B7 -> VRT, QA_PIXEL -> mask.

Accepted: the ``*_MTL.txt`` or ``*_MTL.xml`` file, or the folder holding the
extracted product.  Bands 2-7 (blue, green, red, NIR, SWIR 1, SWIR 2) are
read; band 1 (coastal aerosol) is left out because its surface reflectance
is the least reliable (strongest aerosol correction).  Reflectance =
DN * ``REFLECTANCE_MULT_BAND_n`` + ``REFLECTANCE_ADD_BAND_n`` from the MTL
group ``LEVEL2_SURFACE_REFLECTANCE_PARAMETERS`` (2.75e-5 and -0.2 in
Collection 2); DN 0 is nodata.  The mask excludes pixels whose ``QA_PIXEL``
has any of bits 0-5 set: fill, dilated cloud, cirrus, cloud, cloud shadow,
snow.
"""

from __future__ import annotations

import glob
import os
import xml.etree.ElementTree as ET
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
    parse_xml,
    scale_summary,
    write_mask,
    write_vrt,
)

NAME = "Landsat C2 L2"

#: Band number -> (name, centre wavelength nm, bandwidth nm) of OLI (Landsat 8) and OLI-2 (Landsat 9),
#: whose nominal bands are the same to within a nanometre.
OLI_BANDS: Dict[int, Tuple[str, float, float]] = {
    2: ("blue", 482.0, 60.0), 3: ("green", 561.4, 57.0), 4: ("red", 654.6, 38.0),
    5: ("nir", 864.7, 28.0), 6: ("swir1", 1608.9, 85.0), 7: ("swir2", 2200.7, 187.0),
}

#: QA_PIXEL bits excluded: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow.
QA_EXCLUDED_BITS = 0b111111

_SR_GROUP = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"


def matches(path: str, is_dir: bool) -> bool:
    """Whether ``path`` is a Landsat MTL file or a folder holding one (names only)."""
    if is_dir:
        return bool(glob.glob(os.path.join(glob.escape(path), "*_MTL.txt")))
    upper = os.path.basename(path).upper()
    return upper.endswith("_MTL.TXT") or upper.endswith("_MTL.XML")


def parse_mtl(path: str) -> Dict[str, Dict[str, str]]:
    """``{group: {key: value}}`` of an MTL file, ODL text (``GROUP = ...``) or XML; innermost group names."""
    if path.upper().endswith(".XML"):
        groups: Dict[str, Dict[str, str]] = {}

        def walk(element: ET.Element) -> None:
            for child in element:
                if len(child):
                    walk(child)
                else:
                    groups.setdefault(element.tag, {})[child.tag] = (child.text or "").strip()

        walk(parse_xml(path))
        return groups
    groups = {}
    stack: List[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the Landsat metadata {path!r}: {exc}") from exc
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip().strip('"')
        if key == "GROUP":
            stack.append(value)
        elif key == "END_GROUP":
            if stack:
                stack.pop()
        elif stack:
            groups.setdefault(stack[-1], {})[key] = value
    return groups


def _mtl_path(path: str) -> str:
    if not os.path.isdir(path):
        return os.path.abspath(path)
    found = sorted(glob.glob(os.path.join(glob.escape(path), "*_MTL.txt")))
    if len(found) != 1:
        raise InputError(f"folder {path!r} holds {len(found)} Landsat *_MTL.txt files; pass the MTL file of "
                         "the scene you want.")
    return os.path.abspath(found[0])


def _file(folder: str, contents: Dict[str, str], key: str, suffix: str, mtl: str) -> str:
    """Absolute path of a product file: the MTL's ``key`` in PRODUCT_CONTENTS, else ``*suffix`` in the folder."""
    name = contents.get(key)
    candidates = [os.path.join(folder, name)] if name else glob.glob(os.path.join(glob.escape(folder), f"*{suffix}"))
    if len(candidates) != 1 or not os.path.isfile(candidates[0]):
        raise InputError(f"Landsat product {mtl!r}: {name or '*' + suffix} not found beside the MTL file; "
                         "extract the whole product (every .TIF) into one folder.")
    return os.path.abspath(candidates[0])


def resolve(path: str, cache_dir: Optional[str] = None) -> ResolvedInput:
    """Turn a Landsat 8/9 Collection 2 Level-2 product into a 6-band VRT and a QA_PIXEL mask in the cache folder.

    Raises
    ------
    InputError
        For a Level-1 or non-OLI product, or when a band or QA_PIXEL file is
        missing.
    """
    mtl = _mtl_path(path)
    groups = parse_mtl(mtl)
    spacecraft = groups.get("IMAGE_ATTRIBUTES", {}).get("SPACECRAFT_ID", "")
    if spacecraft and spacecraft.upper() not in ("LANDSAT_8", "LANDSAT_9"):
        raise InputError(f"{mtl} is from {spacecraft}; only Landsat 8 and 9 (OLI) Level-2 products are read.")
    reflectance = groups.get(_SR_GROUP)
    if not reflectance:
        raise InputError(f"{mtl} has no {_SR_GROUP} group: it is not a Level-2 (surface reflectance) product; "
                         "download the Collection 2 Level-2 scene.")
    contents = groups.get("PRODUCT_CONTENTS", {})
    folder = os.path.dirname(mtl)
    images = {n: _file(folder, contents, f"FILE_NAME_BAND_{n}", f"_SR_B{n}.TIF", mtl) for n in OLI_BANDS}
    grid = PixelGrid.of(images[min(OLI_BANDS)])
    bands: List[SourceBand] = []
    for number, (label, wavelength, width) in OLI_BANDS.items():
        try:
            scale = float(reflectance[f"REFLECTANCE_MULT_BAND_{number}"])
            offset = float(reflectance[f"REFLECTANCE_ADD_BAND_{number}"])
        except (KeyError, ValueError) as exc:
            raise InputError(f"{mtl}: no valid REFLECTANCE_MULT/ADD for band {number} ({exc}); "
                             "download the product again.") from exc
        if PixelGrid.of(images[number]) != grid:
            raise InputError(f"{images[number]} is not on the grid of {images[min(OLI_BANDS)]}; the product is "
                             "mixed up: download it again.")
        bands.append(SourceBand(filename=images[number], band=1, size=(grid.width, grid.height),
                                wavelength_nm=wavelength, fwhm_nm=width, scale=scale, offset=offset,
                                description=f"SR_B{number} {label} ({wavelength:g} Nanometers)"))
    qa = _file(folder, contents, "FILE_NAME_QUALITY_L1_PIXEL", "_QA_PIXEL.TIF", mtl)
    cache = cache_folder("landsat", mtl, cache_dir)
    stem = os.path.basename(mtl)[: -len("_MTL.txt")]
    vrt = cache / f"{stem}_SR_B2-B7.vrt"
    write_vrt(vrt, grid, "UInt16", 0.0, bands)
    mask = cache / f"{stem}_QA_mask.tif"
    if not mask.exists():
        write_mask(mask, grid, [(qa, _qa_excluded)])
    return ResolvedInput(path=str(vrt), mask=str(mask), product=NAME, log=(
        f"{NAME}: {mtl} ({spacecraft or 'spacecraft unknown'})",
        f"{NAME}: SR_B2..SR_B7, {band_summary(bands)}; {scale_summary(bands)}; nodata 0",
        f"{NAME}: mask = QA_PIXEL bits 0-5 (fill, dilated cloud, cirrus, cloud, shadow, snow)",
        f"{NAME}: VRT {vrt}",
    ))


def _qa_excluded(values: np.ndarray) -> np.ndarray:
    return (values[0].astype(np.uint16) & QA_EXCLUDED_BITS) != 0
