"""EMIT Level-2A reflectance (NASA JPL): the swath-geometry ``.nc`` -> an orthorectified GeoTIFF.

Accepted: the ``EMIT_L2A_RFL_*.nc`` file (netCDF-4, read with GDAL's netCDF
driver).  ``reflectance`` is stored ``(downtrack, crosstrack, bands)`` in
sensor geometry; the geolocation lookup table ``location/glt_x`` and
``glt_y`` (``(rows, columns)`` of the map grid, 1-based crosstrack and
downtrack indexes, 0 = no pixel) says which swath pixel lands in each map
pixel.  The map grid is the root attributes ``geotransform`` (GDAL order)
and ``spatial_ref`` (WKT).  The gather is done once into a ``float32``
GeoTIFF in the cache (about 4 bytes x bands x map pixels, ~2-4 GB for a
full scene before compression, a minute or so), :data:`BAND_CHUNK` bands at
a time.

Wavelengths and FWHM come from ``sensor_band_parameters/wavelengths`` and
``fwhm``; ``good_wavelengths`` = 0 flags a band bad.  Values are reflectance
already (scale 1, offset 0); nodata is the variable's ``_FillValue``
(-9999), also written where the GLT has no pixel.

Mask: when the matching ``EMIT_L2A_MASK_*.nc`` (same name with ``MASK`` for
``RFL``) lies beside it, its ``Aggregate Flag`` band (or, without one, the
union of its cloud, cirrus and dilated-cloud flags) is orthorectified the
same way; nonzero = exclude, and map pixels without a swath pixel are 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import affine
import numpy as np
import rasterio

from csakd_qgis.errors import InputError
from csakd_qgis.products.common import (
    PixelGrid,
    ResolvedInput,
    SourceBand,
    attribute,
    band_summary,
    cache_folder,
    decimal,
    mask_profile,
    open_cube_writer,
    open_multidim,
    publish,
)

NAME = "EMIT L2A"

#: Bands gathered at once (a chunk of a full scene is about 100 MB read, 250 MB written).
BAND_CHUNK = 16

#: Reflectance nodata when the variable declares no ``_FillValue``.
DEFAULT_FILL = -9999.0

#: Mask band names used when there is no ``Aggregate Flag`` (compared in lower case).
CLOUD_FLAGS = ("cloud flag", "cirrus flag", "dilated cloud flag")


def matches(path: str, is_dir: bool) -> bool:
    """Whether ``path`` is an EMIT L2A reflectance file (name only)."""
    name = os.path.basename(path).upper()
    return not is_dir and name.startswith("EMIT_L2A_RFL") and name.endswith(".NC")


def _array(group: Any, name: str, path: str) -> Any:
    array = group.OpenMDArray(name) if group is not None else None
    if array is None:
        raise InputError(f"{path} has no variable {name!r}: it is not a complete EMIT L2A file; download it again.")
    return array


def _glt(root: Any, path: str) -> Tuple[PixelGrid, np.ndarray, np.ndarray, np.ndarray]:
    """``(map grid, inside (H, W), downtrack index, crosstrack index)``, indexes 0-based where inside."""
    location = root.OpenGroup("location")
    glt_x = np.asarray(_array(location, "glt_x", path).ReadAsArray()).astype(np.int64)
    glt_y = np.asarray(_array(location, "glt_y", path).ReadAsArray()).astype(np.int64)
    geotransform = [float(v) for v in attribute(root, "geotransform", path)]
    wkt = str(attribute(root, "spatial_ref", path))
    inside = (glt_x > 0) & (glt_y > 0)
    height, width = glt_x.shape
    return PixelGrid(width, height, wkt, affine.Affine.from_gdal(*geotransform)), inside, glt_y - 1, glt_x - 1


def _gather(array: Any, inside: np.ndarray, down: np.ndarray, across: np.ndarray, first: int, count: int,
            fill: float) -> np.ndarray:
    """Bands ``first..first+count`` of a ``(downtrack, crosstrack, bands)`` array on the map grid: ``(count, H, W)``."""
    dims = [d.GetSize() for d in array.GetDimensions()]
    swath = np.asarray(array.ReadAsArray(array_start_idx=[0, 0, first], count=[dims[0], dims[1], count]))
    out = np.full((count,) + inside.shape, fill, dtype=swath.dtype)
    out[:, inside] = swath[down[inside], across[inside], :].T
    return out


def resolve(path: str, cache_dir: Optional[str] = None) -> ResolvedInput:
    """Orthorectify an EMIT L2A reflectance file (and its mask file) into GeoTIFFs in the cache folder.

    Raises
    ------
    InputError
        When a variable or attribute the conversion needs is missing, or the
        band lists do not fit the reflectance.
    """
    path = os.path.abspath(path)
    dataset, root = open_multidim(path, "netCDF", NAME)
    reflectance = _array(root, "reflectance", path)
    parameters = root.OpenGroup("sensor_band_parameters")
    waves = decimal(_array(parameters, "wavelengths", path).ReadAsArray())
    fwhms = decimal(_array(parameters, "fwhm", path).ReadAsArray())
    good = np.asarray(_array(parameters, "good_wavelengths", path).ReadAsArray()) != 0
    count = reflectance.GetDimensions()[2].GetSize()
    if not len(waves) == len(fwhms) == len(good) == count:
        raise InputError(f"{path}: reflectance has {count} bands but the sensor_band_parameters lists have "
                         f"{len(waves)}, {len(fwhms)} and {len(good)} entries; download the file again.")
    fill = reflectance.GetNoDataValueAsDouble()
    fill = DEFAULT_FILL if fill is None or not np.isfinite(fill) else float(fill)
    grid, inside, down, across = _glt(root, path)
    bands = [SourceBand(filename=path, band=i + 1, size=(0, 0), wavelength_nm=float(waves[i]),
                        fwhm_nm=float(fwhms[i]), good=bool(good[i]),
                        description=f"band {i + 1} ({waves[i]:g} Nanometers)") for i in range(count)]
    cache = cache_folder("emit", path, cache_dir)
    out = cache / (Path(path).stem + ".tif")
    note = "reused"
    if not out.exists():
        note = "written"

        def write(temp: str) -> None:
            with open_cube_writer(temp, grid, "float32", fill, bands) as ds:
                for first in range(0, count, BAND_CHUNK):
                    n = min(BAND_CHUNK, count - first)
                    data = _gather(reflectance, inside, down, across, first, n, fill).astype(np.float32)
                    ds.write(data, indexes=list(range(first + 1, first + n + 1)))

        publish(out, write)
    log: List[str] = [
        f"{NAME}: {path}",
        f"{NAME}: {band_summary(bands)} (good_wavelengths); reflectance as stored; nodata {fill:g}",
        f"{NAME}: orthorectified with location/glt_x, glt_y onto {grid.width} x {grid.height} map pixels",
    ]
    del dataset
    mask_source = os.path.join(os.path.dirname(path), os.path.basename(path).replace("_RFL_", "_MASK_", 1))
    mask: Optional[Path] = None
    if os.path.isfile(mask_source):
        mask = cache / (Path(mask_source).stem + "_mask.tif")
        log.append(f"{NAME}: mask = {_write_mask(mask_source, mask, grid, inside, down, across)} "
                   f"of {mask_source}")
    else:
        log.append(f"{NAME}: no {os.path.basename(mask_source)} beside it; clouds not masked")
    log.append(f"{NAME}: GeoTIFF {out} ({note})")
    return ResolvedInput(path=str(out), mask=None if mask is None else str(mask), product=NAME, log=tuple(log))


def _write_mask(source: str, mask: Path, grid: PixelGrid, inside: np.ndarray, down: np.ndarray,
                across: np.ndarray) -> str:
    """Orthorectify the L2A mask file's flags into ``mask`` (unless there already); say which flags."""
    dataset, root = open_multidim(source, "netCDF", NAME)
    names = [str(n).strip().lower() for n in _array(root.OpenGroup("sensor_band_parameters"), "mask_bands",
                                                      source).Read()]
    chosen = [names.index("aggregate flag")] if "aggregate flag" in names else \
        [i for i, n in enumerate(names) if n in CLOUD_FLAGS]
    if not chosen:
        raise InputError(f"{source}: mask_bands {names} has no 'Aggregate Flag' nor cloud flags; "
                         "download the L2A mask file again.")
    if not mask.exists():
        array = _array(root, "mask", source)
        union = ~inside
        for index in chosen:
            union |= _gather(array, inside, down, across, index, 1, 1.0)[0] != 0

        def write(temp: str) -> None:
            with rasterio.open(temp, "w", **mask_profile(grid)) as ds:
                ds.write(union.astype(np.uint8)[None])

        publish(mask, write)
    del dataset
    return " + ".join(names[i] for i in chosen)
