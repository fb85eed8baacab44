"""PRISMA Level-2D (ASI) products: the VNIR and SWIR cubes of the ``.he5`` file -> one GeoTIFF.

Accepted: the ``PRS_L2D_*.he5`` file (HDF-EOS5, read with GDAL's HDF5
driver).  The cubes ``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube`` and
``SWIR_Cube`` are stored ``(rows, bands, columns)``, which a VRT cannot
reorder, so they are copied once into a ``uint16`` GeoTIFF in the cache
(about as large as the cubes, ~0.5 GB for a full scene, compressed; tens of
seconds).  Wavelengths and FWHM come from the root attributes
``List_Cw_Vnir``/``List_Cw_Swir`` and ``List_Fwhm_Vnir``/``List_Fwhm_Swir``;
bands with wavelength 0 are dropped and the rest sorted by wavelength (VNIR
and SWIR overlap near 950 nm; both are kept).  Reflectance =
``L2ScaleVnirMin + DN * (L2ScaleVnirMax - L2ScaleVnirMin) / 65535`` (SWIR
alike), written as each band's scale and offset, so the DNs stay exact.

DN 0 in every band marks fill (outside the scene) and is the nodata value.
A DN 0 inside the scene is stored as 1 (a change of (Max-Min)/65535, about
1e-5 reflectance) so it is not taken for fill; a band with no nonzero DN in
the scene is flagged bad.  The grid is ``Epsg_Code`` with 30 m pixels whose
upper-left pixel *centre* is ``Product_ULcorner_easting/northing`` (the
convention of the prismaread package).  The file has no cloud mask at this
level, so no mask is returned.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple, cast

import affine
import numpy as np
from rasterio.crs import CRS
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.products.common import (
    PixelGrid,
    ResolvedInput,
    SourceBand,
    attribute,
    band_summary,
    cache_folder,
    decimal,
    open_cube_writer,
    open_multidim,
    publish,
    scale_summary,
    strips,
)

NAME = "PRISMA L2D"

#: Group of the L2D cubes.
FIELDS = "/HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields"

#: Pixel size of the L2D grid, metres.
PIXEL_M = 30.0

#: Largest DN; the L2 scale maps 0..65535 onto Min..Max.
DN_MAX = 65535.0

#: Rows converted at once (a strip of both cubes is about 140 MB).
ROWS = 256


def matches(path: str, is_dir: bool) -> bool:
    """Whether ``path`` is a PRISMA L2D file (name only)."""
    name = os.path.basename(path).upper()
    return not is_dir and name.startswith("PRS_L2D") and name.endswith(".HE5")


#: A GDAL multidimensional cube, its kept bands and their indexes in the cube.
Cube = Tuple[Any, List[SourceBand], List[int]]


def _cube(root: Any, path: str, part: str) -> Cube:
    """``(array, kept bands, their indexes in the cube)`` of the VNIR or SWIR cube."""
    label = part.capitalize()
    array = root.OpenMDArrayFromFullname(f"{FIELDS}/{part}_Cube")
    if array is None:
        raise InputError(f"{path} has no {FIELDS}/{part}_Cube: it is not a PRISMA L2D product; "
                         "download the L2D product.")
    waves = decimal(attribute(root, f"List_Cw_{label}", path))
    fwhms = decimal(attribute(root, f"List_Fwhm_{label}", path))
    low = float(attribute(root, f"L2Scale{label}Min", path))
    high = float(attribute(root, f"L2Scale{label}Max", path))
    count = array.GetDimensions()[1].GetSize()
    if len(waves) != count or len(fwhms) != count:
        raise InputError(f"{path}: {part}_Cube has {count} bands but List_Cw_{label} {len(waves)} and "
                         f"List_Fwhm_{label} {len(fwhms)} entries; the file is damaged: download it again.")
    kept = [i for i in range(count) if waves[i] > 0]
    bands = [SourceBand(filename=path, band=i + 1, size=(0, 0), wavelength_nm=float(waves[i]),
                        fwhm_nm=float(fwhms[i]), scale=(high - low) / DN_MAX, offset=low,
                        description=f"{part} {i + 1} ({waves[i]:g} Nanometers)") for i in kept]
    return array, bands, kept


def _grid(root: Any, path: str, rows: int, cols: int) -> PixelGrid:
    epsg = int(attribute(root, "Epsg_Code", path))
    east = float(attribute(root, "Product_ULcorner_easting", path))
    north = float(attribute(root, "Product_ULcorner_northing", path))
    half = PIXEL_M / 2.0
    transform = affine.Affine(PIXEL_M, 0.0, east - half, 0.0, -PIXEL_M, north + half)
    return PixelGrid(cols, rows, CRS.from_epsg(epsg).to_wkt(), transform)


def resolve(path: str, cache_dir: Optional[str] = None) -> ResolvedInput:
    """Convert a PRISMA L2D ``.he5`` into a ``uint16`` GeoTIFF with band metadata in the cache folder.

    Raises
    ------
    InputError
        When a cube or attribute the conversion needs is missing.
    """
    path = os.path.abspath(path)
    dataset, root = open_multidim(path, "HDF5", NAME)
    cubes = [_cube(root, path, part) for part in ("VNIR", "SWIR")]
    rows, _, cols = (d.GetSize() for d in cubes[0][0].GetDimensions())
    for array, _, _ in cubes[1:]:
        shape = tuple(d.GetSize() for d in array.GetDimensions())
        if (shape[0], shape[2]) != (rows, cols):
            raise InputError(f"{path}: SWIR_Cube is {shape[0]} x {shape[2]} pixels, VNIR_Cube {rows} x {cols}; "
                             "the file is damaged: download it again.")
    grid = _grid(root, path, rows, cols)
    flat = [band for _, cube_bands, _ in cubes for band in cube_bands]
    order = sorted(range(len(flat)), key=lambda k: cast(float, flat[k].wavelength_nm))  # _cube sets them all
    bands = [flat[k] for k in order]
    cache = cache_folder("prisma", path, cache_dir)
    out = cache / (Path(path).stem + ".tif")
    note = "reused"
    if not out.exists():
        bad: List[int] = []
        publish(out, lambda temp: bad.extend(_convert(temp, grid, cubes, order, bands)))
        note = f"written; bands {bad} hold only 0 and are flagged bad" if bad else "written"
    del dataset
    return ResolvedInput(path=str(out), product=NAME, log=(
        f"{NAME}: {path}",
        f"{NAME}: VNIR + SWIR, {band_summary(bands)} (wavelength-0 bands dropped, sorted by wavelength); "
        f"{scale_summary(bands)}; nodata 0 (fill)",
        f"{NAME}: no cloud mask in L2D; none applied",
        f"{NAME}: GeoTIFF {out} ({note})",
    ))


def _convert(temp: str, grid: PixelGrid, cubes: List[Cube], order: List[int], bands: List[SourceBand]) -> List[int]:
    """Copy the kept bands of both cubes, strip by strip, into the GeoTIFF ``temp``; return the bad band numbers.

    ``order[t]`` is the index, among the kept VNIR then SWIR bands, of
    output band ``t``.  Bands with no nonzero DN in the scene are flagged
    bad (``bbl = 0``).
    """
    seen = np.zeros(len(order), dtype=bool)
    with open_cube_writer(temp, grid, "uint16", 0.0, bands) as ds:
        for row, count in strips(grid.height, ROWS):
            parts = []
            for array, _, kept in cubes:
                total = array.GetDimensions()[1].GetSize()
                strip = np.asarray(array.ReadAsArray(array_start_idx=[row, 0, 0], count=[count, total, grid.width]))
                parts.append(strip[:, kept, :].transpose(1, 0, 2))
            data = np.concatenate(parts, axis=0)[order]
            inside = np.any(data != 0, axis=0)
            seen |= np.any(data[:, inside] != 0, axis=1)
            data[:, inside] = np.maximum(data[:, inside], 1)
            ds.write(data, window=Window(0, row, grid.width, count))
        bad = [int(number) for number in np.flatnonzero(~seen) + 1]
        for number in bad:
            ds.update_tags(number, bbl="0")
    return bad
