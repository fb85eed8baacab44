"""Shared pieces of the product readers: the cache folder, VRT writing, masks.

Every reader turns a downloaded product into one raster that GDAL opens with
full band metadata (a VRT over the product's own files, or a GeoTIFF where
a VRT cannot express the layout) plus an optional mask raster.  Both go into
a *cache folder* (:func:`cache_folder`); nothing is written into the product.

Band metadata is written where :func:`csakd_qgis.io.read.read_info` looks
first: per-band default-domain items ``wavelength``, ``wavelength_units``
(``Nanometers``), ``fwhm`` and ``bbl``, with GDAL's per-band scale, offset
and nodata, so ``physical = stored * scale + offset``.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import affine
import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.windows import Window

from csakd_qgis.errors import InputError, RasterReadError, RasterWriteError, import_optional
from csakd_qgis.io.read import open_raster
from csakd_qgis.io.write import ZSTD_LEVEL, partial_path

#: Bump when a reader changes what it writes, so older cache entries are not reused.
CACHE_VERSION = 1

#: Rows a mask or cube conversion handles at once.
STRIP_ROWS = 512

#: rasterio/numpy dtype names to the GDAL type names of VRT bands.
GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class ResolvedInput:
    """A user input made ready for GDAL.

    Attributes
    ----------
    path:
        Dataset to open: the VRT or GeoTIFF written for a product, or the
        input unchanged when it is an ordinary raster.
    mask:
        Raster on the same grid as ``path``, nonzero = exclude the pixel
        (clouds, shadows, fill), or None when the product has no such layer.
    product:
        Product name (e.g. ``"EnMAP L2A"``), ``""`` for an ordinary raster.
    log:
        Lines saying what was read (product, bands, wavelengths, scale,
        masks, cache), for the run's log.
    """

    path: str
    mask: Optional[str] = None
    product: str = ""
    log: Tuple[str, ...] = ()


@dataclass(frozen=True)
class PixelGrid:
    """Size and georeferencing of a product raster: ``width`` x ``height`` pixels, ``transform`` into ``crs_wkt``.

    Not :class:`csakd_qgis.geo.grid.Grid` (the engine's north-up grids): a product may have no CRS yet.
    """

    width: int
    height: int
    crs_wkt: str
    transform: affine.Affine

    @classmethod
    def of(cls, path: str) -> PixelGrid:
        """The grid of the raster GDAL opens as ``path``."""
        with open_raster(path) as ds:
            return cls(ds.width, ds.height, ds.crs.to_wkt() if ds.crs else "", ds.transform)


@dataclass(frozen=True)
class SourceBand:
    """One band of a VRT: where its pixels come from and what they mean.

    ``filename`` is a GDAL name (absolute path, or ``/vsizip/...``),
    ``band`` its 1-based band, ``size`` its ``(width, height)`` in pixels
    (resampled by nearest neighbour onto the VRT grid when it differs).
    Physical value = stored * ``scale`` + ``offset``.  Wavelength and FWHM
    are nanometres; ``good`` False flags a bad band (``bbl = 0``).
    """

    filename: str
    band: int
    size: Tuple[int, int]
    wavelength_nm: Optional[float] = None
    fwhm_nm: Optional[float] = None
    good: bool = True
    scale: float = 1.0
    offset: float = 0.0
    description: str = ""


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/csakd_qgis/products``, or ``~/.cache/csakd_qgis/products``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "csakd_qgis" / "products"


def cache_folder(product: str, key_file: str, cache_dir: Optional[str] = None) -> Path:
    """Folder for the files made from one product, created if needed.

    ``<cache_dir or default_cache_root()>/<product>-<hash>``, where the hash
    covers :data:`CACHE_VERSION` and the absolute path, size and modification
    time of ``key_file`` (the product's metadata file or archive), so a
    replaced download gets a fresh folder.

    Raises
    ------
    InputError
        When the folder cannot be created.
    """
    stat = os.stat(key_file)
    key = f"{CACHE_VERSION}|{os.path.abspath(key_file)}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else default_cache_root()
    folder = root / f"{product}-{digest}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the product cache folder {str(folder)!r}: {exc}. Pass another cache folder "
            "(cache_dir) or set XDG_CACHE_HOME to a writable place."
        ) from exc
    return folder


def publish(path: Path, write: Callable[[str], None]) -> None:
    """Run ``write(temporary_name)`` and rename the result to ``path``; remove the temporary on failure."""
    temp = partial_path(str(path), suffix=path.suffix)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def _sub(parent: ET.Element, tag: str, text: Optional[str] = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def vrt_xml(grid: PixelGrid, dtype: str, nodata: Optional[float], bands: Sequence[SourceBand]) -> str:
    """Text of a VRT on ``grid`` whose bands are ``bands``, all stored as GDAL type ``dtype``.

    Each band gets a description, the metadata items ``wavelength``,
    ``wavelength_units``, ``fwhm`` and ``bbl``, scale, offset and
    ``nodata`` (the same for every band; None declares none).
    """
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    if grid.crs_wkt:
        _sub(root, "SRS", grid.crs_wkt)
    t = grid.transform
    _sub(root, "GeoTransform", ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)))
    if any(b.wavelength_nm is not None for b in bands):
        _sub(_sub(root, "Metadata"), "MDI", "Nanometers", key="wavelength_units")
    for number, band in enumerate(bands, start=1):
        element = _sub(root, "VRTRasterBand", dataType=dtype, band=str(number))
        if band.description:
            _sub(element, "Description", band.description)
        items = _sub(element, "Metadata")
        if band.wavelength_nm is not None:
            _sub(items, "MDI", repr(float(band.wavelength_nm)), key="wavelength")
            _sub(items, "MDI", "Nanometers", key="wavelength_units")
        if band.fwhm_nm is not None:
            _sub(items, "MDI", repr(float(band.fwhm_nm)), key="fwhm")
        _sub(items, "MDI", "1" if band.good else "0", key="bbl")
        if nodata is not None:
            _sub(element, "NoDataValue", repr(float(nodata)))
        if band.scale != 1.0 or band.offset != 0.0:
            _sub(element, "Offset", repr(float(band.offset)))
            _sub(element, "Scale", repr(float(band.scale)))
        source = _sub(element, "SimpleSource", resampling="nearest")
        _sub(source, "SourceFilename", band.filename, relativeToVRT="0")
        _sub(source, "SourceBand", str(band.band))
        _sub(source, "SrcRect", xOff="0", yOff="0", xSize=str(band.size[0]), ySize=str(band.size[1]))
        _sub(source, "DstRect", xOff="0", yOff="0", xSize=str(grid.width), ySize=str(grid.height))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_vrt(path: Path, grid: PixelGrid, dtype: str, nodata: Optional[float], bands: Sequence[SourceBand]) -> None:
    """Write :func:`vrt_xml` to ``path`` atomically."""
    text = vrt_xml(grid, dtype, nodata, bands)

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)

    publish(path, write)


def mask_profile(grid: PixelGrid) -> dict:
    """Rasterio profile of a mask GeoTIFF on ``grid``: one ``uint8`` band, 0 = keep, 1 = exclude."""
    return dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8",
                crs=grid.crs_wkt or None, transform=grid.transform, compress="deflate", tiled=True,
                blockxsize=256, blockysize=256)


def strips(height: int, rows: int = STRIP_ROWS) -> Iterable[Tuple[int, int]]:
    """``(first_row, row_count)`` of consecutive strips covering ``height`` rows."""
    for row in range(0, height, rows):
        yield row, min(rows, height - row)


def write_mask(path: Path, grid: PixelGrid, layers: Sequence[Tuple[str, Callable[[np.ndarray], np.ndarray]]]) -> None:
    """Write the union of ``layers`` as a mask GeoTIFF (:func:`mask_profile`) at ``path``, strip by strip.

    Each layer is ``(gdal_name, flag)``: a raster on ``grid`` and a function
    from its stored values ``(C, rows, W)`` to a boolean ``(rows, W)``
    (True = exclude).

    Raises
    ------
    InputError
        When a layer's size differs from ``grid``.
    """
    handles = [open_raster(name) for name, _ in layers]
    try:
        for (name, _), ds in zip(layers, handles):
            if (ds.width, ds.height) != (grid.width, grid.height):
                raise InputError(
                    f"mask layer {name!r} is {ds.width} x {ds.height} pixels, the image {grid.width} x "
                    f"{grid.height}; the product is incomplete or mixed up: download it again."
                )

        def write(temp: str) -> None:
            with rasterio.open(temp, "w", **mask_profile(grid)) as out:
                for row, rows in strips(grid.height):
                    window = Window(0, row, grid.width, rows)
                    union = np.zeros((rows, grid.width), dtype=bool)
                    for (_, flag), ds in zip(layers, handles):
                        union |= flag(ds.read(window=window))
                    out.write(union.astype(np.uint8)[None], window=window)

        try:
            publish(path, write)
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise RasterWriteError(f"cannot write the mask {str(path)!r}: {exc}") from exc
    finally:
        for ds in handles:
            ds.close()


def band_summary(bands: Sequence[SourceBand]) -> str:
    """``"N bands, a-b nm (k flagged bad)"`` for a log line."""
    waves = [b.wavelength_nm for b in bands if b.wavelength_nm is not None]
    text = f"{len(bands)} bands"
    if waves:
        text += f", {min(waves):.1f}-{max(waves):.1f} nm"
    bad = sum(not b.good for b in bands)
    if bad:
        text += f" ({bad} flagged bad)"
    return text


def scale_summary(bands: Sequence[SourceBand]) -> str:
    """``"scale s, offset o"`` when all bands share them, else their ranges."""
    scales = sorted({b.scale for b in bands})
    offsets = sorted({b.offset for b in bands})
    scale = f"{scales[0]:g}" if len(scales) == 1 else f"{scales[0]:g}..{scales[-1]:g}"
    offset = f"{offsets[0]:g}" if len(offsets) == 1 else f"{offsets[0]:g}..{offsets[-1]:g}"
    return f"physical = stored * {scale} + {offset}"


def local_name(tag: str) -> str:
    """An XML tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def parse_xml(path: str, text: Optional[bytes] = None) -> ET.Element:
    """Root element of the XML file ``path`` (or of ``text`` read from it); :class:`InputError` if malformed."""
    try:
        return ET.fromstring(text) if text is not None else ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"cannot read the product metadata {path!r}: {exc}. Download the product again.") from exc


def band_tags(band: SourceBand) -> Dict[str, str]:
    """Default-domain metadata items of one band (what :func:`csakd_qgis.io.read.read_info` reads first)."""
    tags = {"bbl": "1" if band.good else "0"}
    if band.wavelength_nm is not None:
        tags.update(wavelength=repr(float(band.wavelength_nm)), wavelength_units="Nanometers")
    if band.fwhm_nm is not None:
        tags["fwhm"] = repr(float(band.fwhm_nm))
    return tags


def open_cube_writer(temp: str, grid: PixelGrid, dtype: str, nodata: Optional[float],
                     bands: Sequence[SourceBand]) -> rasterio.io.DatasetWriter:
    """Open a tiled, band-interleaved, ZSTD-compressed GeoTIFF for a converted cube, its band metadata set.

    Per band: description, :func:`band_tags`, scale and offset; ``nodata``
    for all.  The caller writes the pixels and closes it.
    """
    floating = np.issubdtype(np.dtype(dtype), np.floating)
    ds = rasterio.open(temp, "w", driver="GTiff", width=grid.width, height=grid.height, count=len(bands),
                       dtype=dtype, crs=grid.crs_wkt or None, transform=grid.transform, nodata=nodata,
                       tiled=True, blockxsize=256, blockysize=256, interleave="band", compress="zstd",
                       zstd_level=ZSTD_LEVEL, predictor=3 if floating else 2, bigtiff="IF_SAFER")
    ds.scales = tuple(b.scale for b in bands)
    ds.offsets = tuple(b.offset for b in bands)
    ds.update_tags(wavelength_units="Nanometers")
    for number, band in enumerate(bands, start=1):
        ds.update_tags(number, **band_tags(band))
        if band.description:
            ds.set_band_description(number, band.description)
    return ds


def open_multidim(path: str, driver: str, product: str) -> Tuple[Any, Any]:
    """``(dataset, root group)`` of ``path`` opened by GDAL's multidimensional API with ``driver``.

    Raises
    ------
    DependencyError
        When GDAL's Python bindings (``osgeo``) are missing.
    RasterReadError
        When GDAL cannot open the file.
    """
    gdal = import_optional("osgeo.gdal", f"reading {product} files", "apt install python3-gdal")
    dataset = gdal.OpenEx(path, gdal.OF_MULTIDIM_RASTER, allowed_drivers=[driver])
    if dataset is None:
        raise RasterReadError(f"cannot open the {product} file {path!r} with GDAL's {driver} driver: "
                              f"{gdal.GetLastErrorMsg()}. Download it again.")
    return dataset, dataset.GetRootGroup()


def attribute(group: Any, name: str, where: str) -> Any:
    """Value of attribute ``name`` of a GDAL multidimensional group or array; :class:`InputError` if absent."""
    found = group.GetAttribute(name) if name in {a.GetName() for a in group.GetAttributes()} else None
    if found is None:
        raise InputError(f"{where} has no attribute {name!r}: it is not a complete product; download it again.")
    return found.Read()


def decimal(values: npt.ArrayLike) -> np.ndarray:
    """Numbers as float64 with the shortest decimal of their stored type (float32 8.6 -> 8.6, not 8.600000381)."""
    array = np.atleast_1d(np.asarray(values))
    if array.dtype == np.float32:
        return np.array([float(str(v)) for v in array], dtype=np.float64)
    if array.dtype.kind in "iuf":
        return array.astype(np.float64)
    return np.array([float(v) for v in array], dtype=np.float64)
