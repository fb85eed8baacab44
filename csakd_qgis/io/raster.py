"""Raster reading and writing with band metadata, masks and atomic outputs.

Everything the engine reads or writes goes through this module, so nodata,
masks, scale/offset and spectral band metadata are handled in one place.

Conventions
-----------
* Arrays are band-first: ``(C, H, W)``; a window is a
  :class:`rasterio.windows.Window` in pixels of the raster it is read from.
* Values returned by :func:`read_window` are ``float32`` in *physical units*:
  GDAL's per-band scale and offset are applied (``stored * scale + offset``).
* A pixel is *invalid* when GDAL's mask says so (nodata value, alpha band,
  per-dataset mask) or when its value is NaN or infinite.  Invalid values are
  NaN.  The returned ``valid`` mask ``(H, W)`` is True where every *good* band
  is valid; bands flagged bad (ENVI ``bbl = 0``, e.g. water-vapour bands that
  EnMAP fills with nodata) do not decide validity but are NaN where they hold
  nothing.  When every selected band is bad, all of them decide.
* An alpha band (colour interpretation ``alpha``) is a mask, not data: it is
  left out of :attr:`RasterInfo.count` and of band numbering.
* Wavelengths and FWHM are in nanometres.  They are read, in this order, from
  per-band items ``wavelength``/``fwhm``/``bbl`` (with ``wavelength_units`` on
  the band or the dataset), the IMAGERY domain (``CENTRAL_WAVELENGTH_UM``,
  ``FWHM_UM``), the ENVI domain (``wavelength = {..}``, ``fwhm``, ``bbl``,
  ``wavelength_units``) and band descriptions such as ``"376.44 Nanometers"``.
  When no unit is given, values all below 100 are taken as micrometres.

Outputs are written to a temporary file beside the destination
(``.NAME.csakd-partial-PID.tif``), checked block by block and renamed over it
only when complete, so an error, a cancelled run or a full disk leaves any
previous file untouched (``docs/reliability.md``).
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import affine
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Interleaving
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReaderBase
from rasterio.windows import Window

from csakd_qgis.errors import InputError, RasterReadError, RasterWriteError

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

#: ZSTD level of written GeoTIFFs (GDAL's default, 9, compresses about 7x slower for about 10 % smaller files).
ZSTD_LEVEL = 1

#: Values encoded at once by :meth:`RasterWriter.encode` (bounds its float64 temporaries to about 64 MB).
ENCODE_CHUNK = 8 * 2**20

#: GDAL block cache (MB) :func:`gdal_block_cache` gives a fusion run (its reads and its whole-block writes).
BLOCK_CACHE_MB = 64

#: Free bytes below which a failed write is reported as a full disk.
DISK_FULL_BYTES = 16 * 2**20


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
    (a strip of ``(rows, width)`` for an untiled file).
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


# ----------------------------------------------------------------------------- reading


def open_raster(path: str) -> rasterio.io.DatasetReader:
    """Open ``path`` read-only, turning GDAL failures into :class:`RasterReadError`."""
    try:
        return rasterio.open(path)
    except (RasterioIOError, OSError) as exc:
        raise RasterReadError(
            f"cannot open raster {path!r}: {exc}. Check the path and that GDAL can read the format "
            "(try 'gdalinfo' on it)."
        ) from exc


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


def _band_metadata(ds: DatasetReaderBase, indexes: Sequence[int]) -> Tuple[BandInfo, ...]:
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


def _info_from_dataset(ds: DatasetReaderBase, path: str) -> RasterInfo:
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
        bands=_band_metadata(ds, indexes),
        scales=scales,
        offsets=offsets,
        block=tuple(int(v) for v in ds.block_shapes[indexes[0] - 1]),
    )


def read_info(path: str) -> RasterInfo:
    """Size, georeferencing, dtype, nodata and band metadata of the raster at ``path``.

    Parameters
    ----------
    path:
        Any GDAL dataset name: a file (GeoTIFF, ENVI, VRT, JP2, ...) or a
        subdataset name such as ``NETCDF:"file.nc":reflectance``.

    Raises
    ------
    RasterReadError
        When GDAL cannot open ``path`` or it holds only an alpha band.
    """
    with open_raster(path) as ds:
        return _info_from_dataset(ds, str(path))


def _intersect(window: Window, width: int, height: int) -> Optional[Window]:
    """Part of ``window`` inside a ``width`` x ``height`` raster, or None when empty."""
    col0, row0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
    col1 = min(int(window.col_off + window.width), width)
    row1 = min(int(window.row_off + window.height), height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def read_dataset_window(
    ds: DatasetReaderBase,
    window: Optional[Window],
    gdal_indexes: Sequence[int],
    *,
    scales: Sequence[float],
    offsets: Sequence[float],
    good: Sequence[bool],
    boundless: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Read bands of an open dataset with explicit scale/offset and good-band flags.

    The building block of :func:`read_window`, for callers that keep a
    dataset (or a :class:`rasterio.vrt.WarpedVRT`) open and know its band
    metadata already.  ``gdal_indexes`` are 1-based GDAL band numbers;
    ``scales``, ``offsets`` and ``good`` have one entry per index.  With
    ``boundless`` the window may reach outside the raster: those pixels are
    NaN and invalid.  Returns ``(data float32 (C, h, w), valid bool (h, w))``
    as described in the module docstring.
    """
    if window is None:
        window = Window(0, 0, ds.width, ds.height)
    window = Window(int(round(window.col_off)), int(round(window.row_off)),
                    int(round(window.width)), int(round(window.height)))
    if window.width <= 0 or window.height <= 0:
        raise RasterReadError(f"empty window {window} requested from {ds.name!r}.")
    inner = _intersect(window, ds.width, ds.height)
    if not boundless and (inner is None or inner.width != window.width or inner.height != window.height):
        raise RasterReadError(
            f"window {window} reaches outside raster {ds.name!r} ({ds.width} x {ds.height} pixels)."
        )
    count = len(gdal_indexes)
    data = np.full((count, window.height, window.width), np.nan, dtype=np.float32)
    band_valid = np.zeros((count, window.height, window.width), dtype=bool)
    if inner is not None:
        rows = slice(inner.row_off - window.row_off, inner.row_off - window.row_off + inner.height)
        cols = slice(inner.col_off - window.col_off, inner.col_off - window.col_off + inner.width)
        try:
            raw = ds.read(list(gdal_indexes), window=inner, out_dtype=np.float64)
            masks = ds.read_masks(list(gdal_indexes), window=inner)
        except (RasterioIOError, OSError) as exc:
            raise RasterReadError(
                f"cannot read window {inner} of {ds.name!r}: {exc}. The file is probably truncated or damaged "
                "(an interrupted copy or download): create or download it again ('gdalinfo -checksum' on it "
                "shows whether every block can be read)."
            ) from exc
        scale = np.asarray(scales, dtype=np.float64)[:, None, None]
        offset = np.asarray(offsets, dtype=np.float64)[:, None, None]
        with np.errstate(over="ignore", invalid="ignore"):
            physical = (raw * scale + offset).astype(np.float32)
        ok = (masks != 0) & np.isfinite(physical)
        if ds.nodata is not None and not math.isnan(ds.nodata):
            ok &= raw != ds.nodata
        physical[~ok] = np.nan
        data[:, rows, cols] = physical
        band_valid[:, rows, cols] = ok
    deciding = np.asarray(good, dtype=bool)
    if not deciding.any():
        deciding = np.ones(count, dtype=bool)
    valid = band_valid[deciding].all(axis=0)
    data[:, ~valid] = np.nan
    return data, valid


def read_window(
    path_or_dataset: Union[str, DatasetReaderBase],
    window: Optional[Window] = None,
    bands: Optional[Sequence[int]] = None,
    boundless: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Read a window of a raster in physical units with its validity mask.

    Parameters
    ----------
    path_or_dataset:
        A GDAL dataset name, or an open rasterio dataset / ``WarpedVRT``
        (kept open; use one per thread).
    window:
        Pixel window of that raster; None reads the whole raster (small
        rasters only).
    bands:
        1-based data band numbers (alpha excluded); None reads every data band.
    boundless:
        Allow the window to reach outside the raster; outside pixels are NaN
        and invalid.

    Returns
    -------
    data : numpy.ndarray
        ``float32 (C, h, w)``, scale/offset applied, NaN where invalid.
    valid : numpy.ndarray
        ``bool (h, w)``, True where every good band is valid.

    Raises
    ------
    RasterReadError
        When the raster cannot be opened or read, a band number is out of
        range, or the window leaves the raster without ``boundless``.
    """
    if isinstance(path_or_dataset, (str, os.PathLike)):
        with open_raster(str(path_or_dataset)) as ds:
            return read_window(ds, window, bands, boundless)
    ds = path_or_dataset
    indexes = data_band_indexes(ds)
    selected = list(range(1, len(indexes) + 1)) if bands is None else [int(b) for b in bands]
    bad = [b for b in selected if not 1 <= b <= len(indexes)]
    if bad or not selected:
        raise RasterReadError(
            f"band number(s) {bad or selected} not in 1..{len(indexes)} of raster {ds.name!r}."
        )
    gdal_indexes = [indexes[b - 1] for b in selected]
    meta = _band_metadata(ds, gdal_indexes)
    scales = [float(ds.scales[i - 1]) if ds.scales[i - 1] else 1.0 for i in gdal_indexes]
    offsets = [float(ds.offsets[i - 1] or 0.0) for i in gdal_indexes]
    return read_dataset_window(ds, window, gdal_indexes, scales=scales, offsets=offsets,
                               good=[m.good for m in meta], boundless=boundless)


# ----------------------------------------------------------------------------- writing


@contextmanager
def gdal_block_cache(megabytes: int = BLOCK_CACHE_MB) -> Iterator[None]:
    """Give GDAL's block cache ``megabytes`` MB inside the ``with`` block, then restore the previous size.

    GDAL has one block cache per process, sized once from ``GDAL_CACHEMAX``
    (default 5 % of the RAM) and shared by every thread, so this changes it
    for the whole process (other threads' GDAL work included) while the
    block runs.  A writer of whole blocks needs little cache: a dirty
    block is compressed and written when evicted and never read back.
    Readers need little too, but GDAL's default lets reads fill it: every
    input block a window touches stays decoded (all bands of a
    band-interleaved raster), so scattered sample windows over a large
    raster keep hundreds of MB.  Closing a dataset empties its blocks from
    the cache, but glibc keeps the freed heap, so the process stays that
    large.
    ``rasterio.Env(GDAL_CACHEMAX=n)`` calls ``GDALSetCacheMax64(n)``: ``n``
    is in *bytes* there, not in MB as in the environment variable.
    """
    with rasterio.Env(GDAL_CACHEMAX=int(megabytes) * 2**20):
        yield


#: What every temporary file of an unfinished output has in its name.
PARTIAL_MARKER = "csakd-partial"


def partial_path(path: str, suffix: str = ".tif") -> str:
    """Return the temporary name (``.NAME.csakd-partial-PID`` + ``suffix``) a writer uses beside ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{PARTIAL_MARKER}-{os.getpid()}{suffix}")


def _write_failure(path: str, detail: str, error: Optional[BaseException] = None) -> RasterWriteError:
    """A :class:`RasterWriteError` for ``path`` that says so when the disk is full.

    The disk counts as full when ``error`` is ``ENOSPC``, ``detail`` says "no
    space left", or the destination folder has less than
    :data:`DISK_FULL_BYTES` free (GDAL often reports a failed block write
    only as a log line, so the free space is the reliable sign).
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free: Optional[int] = shutil.disk_usage(folder).free
    except OSError:
        free = None
    full = (getattr(error, "errno", None) == errno.ENOSPC or "no space left" in detail.lower()
            or (free is not None and free < DISK_FULL_BYTES))
    if not full:
        return RasterWriteError(f"cannot write {path!r}: {detail}")
    left = "" if free is None else f", {free / 2**20:.1f} MB free"
    return RasterWriteError(
        f"cannot write {path!r}: the disk is full (folder {folder!r}{left}). Free some space or choose an output "
        f"folder on another disk; nothing was written under that name (a previous file there is unchanged). "
        f"[{detail}]"
    )


def missing_blocks(path: str) -> Tuple[int, int]:
    """``(missing, total)`` blocks of the GeoTIFF at ``path`` whose bytes are not all in the file.

    A block is missing when GDAL recorded no offset or size for it, or its
    bytes would reach beyond the end of the file: what a write that failed
    for lack of disk space leaves, while GDAL (3.6) still closes the file
    without an error.  Counts per band for band-interleaved files, per pixel
    block otherwise.  For files written without ``SPARSE_OK`` (GDAL's
    default, and :class:`RasterWriter`'s), where every block is stored.
    """
    size = os.path.getsize(path)
    with rasterio.open(path) as ds:
        bands = ds.indexes if ds.interleaving == Interleaving.band else ds.indexes[:1]
        block_h, block_w = ds.block_shapes[0]
        rows, cols = math.ceil(ds.height / block_h), math.ceil(ds.width / block_w)
        missing = 0
        for band in bands:
            for row in range(rows):
                for col in range(cols):
                    offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                    length = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                    if not offset or not length or int(length) == 0 or int(offset) + int(length) > size:
                        missing += 1
    return missing, len(bands) * rows * cols


def _default_nodata(dtype: str, nodata: Optional[float]) -> Optional[float]:
    """Return the nodata to declare: the given one, else NaN (float) or an end of the integer range."""
    if nodata is not None:
        return float(nodata)
    if np.issubdtype(np.dtype(dtype), np.floating):
        return float("nan")
    info = np.iinfo(np.dtype(dtype))
    return float(info.min if info.min < 0 else info.max)


def _band_tags(band: BandInfo) -> Dict[str, str]:
    tags: Dict[str, str] = {"bbl": "1" if band.good else "0"}
    if band.wavelength_nm is not None:
        tags["wavelength"] = repr(float(band.wavelength_nm))
        tags["wavelength_units"] = "Nanometers"
    if band.fwhm_nm is not None:
        tags["fwhm"] = repr(float(band.fwhm_nm))
    return tags


def _envi_tags(bands: Sequence[BandInfo]) -> Dict[str, str]:
    tags: Dict[str, str] = {"bbl": "{" + ", ".join("1" if b.good else "0" for b in bands) + "}"}
    if all(b.wavelength_nm is not None for b in bands):
        tags["wavelength"] = "{" + ", ".join(repr(float(b.wavelength_nm)) for b in bands) + "}"
        tags["wavelength_units"] = "Nanometers"
    if all(b.fwhm_nm is not None for b in bands):
        tags["fwhm"] = "{" + ", ".join(repr(float(b.fwhm_nm)) for b in bands) + "}"
    return tags


class RasterWriter:
    """Context manager that writes a GeoTIFF window by window and publishes it atomically.

    Parameters
    ----------
    path:
        Destination file.  Refused if it exists, unless ``overwrite``.
    width, height, count:
        Size in pixels and number of bands.
    crs, transform:
        Georeferencing of the output grid.
    dtype:
        Stored data type.  For integer types, :meth:`write` stores
        ``round(value / scale)`` clipped to the type's range, never equal to
        ``nodata``, and declares ``scale`` as GDAL scale so readers get
        physical values back.
    nodata:
        Value stored for NaN.  None declares NaN for float types and the
        type's minimum (signed) or maximum (unsigned) for integer types.
    bands:
        Spectral metadata, ``count`` entries or empty; written as per-band
        items (``wavelength``, ``wavelength_units=Nanometers``, ``fwhm``,
        ``bbl``), band descriptions and ENVI-domain lists.
    scale:
        Physical units per stored unit (e.g. ``1e-4`` for reflectance stored
        as ``int16`` x 10000).
    compress, predictor, tiled, blocksize, bigtiff:
        GeoTIFF creation options; ``predictor`` None picks 3 for floats and
        2 for integers when compressing.  ZSTD is written at level
        :data:`ZSTD_LEVEL` unless ``zstd_level`` is passed.
    cog:
        Convert to a Cloud Optimized GeoTIFF (with overviews) before
        publishing.
    overwrite:
        Replace an existing destination on success.

    Notes
    -----
    Data go to ``.NAME.csakd-partial-PID.tif`` in the destination folder.
    On a clean exit the file is flushed, optionally converted to COG,
    checked for blocks that did not reach the disk (:func:`missing_blocks`),
    synced to disk and renamed over ``path``; on any exception (including
    :class:`~csakd_qgis.errors.Cancelled`) or a failed check it is removed
    and ``path`` is left as it was.  Failures for lack of disk space say so
    (:data:`DISK_FULL_BYTES`).  Not thread-safe: write from one thread.

    Speed: GDAL compresses a block when it leaves its block cache.  A window
    that covers only part of a block leaves that block partly written; if
    the block is evicted before the rest arrives, GDAL compresses it, and
    later reads, decompresses and compresses it again.  Writers of large
    rasters should therefore write whole blocks (:attr:`blocksize`-aligned
    windows, e.g. strips of ``blocksize`` rows); the tiled engine does
    (:mod:`csakd_qgis.fusion.pipeline`).
    """

    def __init__(self, path: str, *, width: int, height: int, count: int, crs, transform,
                 dtype: str = "float32", nodata: Optional[float] = None, bands: Sequence[BandInfo] = (),
                 scale: float = 1.0, compress: Optional[str] = "zstd", predictor: Optional[int] = None,
                 tiled: bool = True, blocksize: int = 256, bigtiff: str = "IF_SAFER", cog: bool = False,
                 overwrite: bool = False, **creation_options) -> None:
        self.path = str(path)
        self.width, self.height, self.count = int(width), int(height), int(count)
        self.dtype = np.dtype(dtype).name
        self.scale = float(scale)
        self.bands = tuple(bands)
        self.cog = cog
        if self.width <= 0 or self.height <= 0 or self.count <= 0:
            raise RasterWriteError(f"cannot write {self.path!r}: size {width} x {height} x {count} is empty.")
        if self.bands and len(self.bands) != self.count:
            raise RasterWriteError(
                f"cannot write {self.path!r}: {len(self.bands)} band descriptions for {self.count} bands."
            )
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise RasterWriteError(f"cannot write {self.path!r}: scale must be positive, got {scale}.")
        if os.path.isdir(self.path):
            raise RasterWriteError(
                f"output {self.path!r} is a folder; give a file name, e.g. "
                f"{os.path.join(self.path, 'fused.tif')!r}."
            )
        if os.path.exists(self.path) and not overwrite:
            raise RasterWriteError(
                f"output {self.path!r} exists; choose another name or allow overwriting (--overwrite)."
            )
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise RasterWriteError(f"cannot write {self.path!r}: folder {folder!r} does not exist.")
        self.nodata = _default_nodata(self.dtype, nodata)
        self._is_int = np.issubdtype(np.dtype(self.dtype), np.integer)
        if self._is_int:
            info = np.iinfo(np.dtype(self.dtype))
            if not info.min <= self.nodata <= info.max or self.nodata != int(self.nodata):
                raise RasterWriteError(f"nodata {nodata} cannot be stored as {self.dtype} in {self.path!r}.")
        self.blocksize = int(blocksize) if tiled else 0
        self._temp = partial_path(self.path)
        profile = dict(driver="GTiff", width=self.width, height=self.height, count=self.count,
                       dtype=self.dtype, crs=crs, transform=transform, nodata=self.nodata,
                       bigtiff=bigtiff, interleave="pixel" if self.count <= 4 else "band")
        if tiled:
            profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
        if compress:
            profile["compress"] = compress
            profile["predictor"] = predictor if predictor is not None else (2 if self._is_int else 3)
            if str(compress).lower() == "zstd":
                profile["zstd_level"] = ZSTD_LEVEL
        profile.update(creation_options)
        try:
            self._ds = rasterio.open(self._temp, "w", **profile)
        except (RasterioIOError, OSError, rasterio.errors.RasterioError) as exc:
            raise _write_failure(self.path, f"cannot create it: {exc}", exc) from exc
        try:
            self._write_metadata()
        except Exception:
            self._discard()
            raise

    def _write_metadata(self) -> None:
        ds = self._ds
        if self.scale != 1.0:
            ds.scales = (self.scale,) * self.count
            ds.offsets = (0.0,) * self.count
        for i, band in enumerate(self.bands, start=1):
            ds.update_tags(i, **_band_tags(band))
            if band.description:
                ds.set_band_description(i, band.description)
            elif band.wavelength_nm is not None:
                ds.set_band_description(i, f"band {i} ({band.wavelength_nm:g} Nanometers)")
        if self.bands:
            ds.update_tags(ns="ENVI", **_envi_tags(self.bands))
            if all(b.wavelength_nm is not None for b in self.bands):
                ds.update_tags(wavelength_units="Nanometers")

    def __enter__(self) -> RasterWriter:
        return self

    def encode(self, data: np.ndarray) -> np.ndarray:
        """Physical values to stored values.

        Parameters
        ----------
        data:
            ``(C, h, w)`` float physical values, NaN (or infinite) = nodata.

        Returns
        -------
        numpy.ndarray
            ``(C, h, w)`` of the output dtype: float outputs ``data / scale``
            with nodata where invalid; integer outputs ``round(data / scale)``
            (in float64, then clipped to the type's range and moved off the
            nodata value) with nodata where invalid.  Worked out a few bands
            at a time, so temporaries stay near :data:`ENCODE_CHUNK` values.
        """
        data = np.asarray(data)
        out = np.empty(data.shape, dtype=self.dtype)
        step = max(1, ENCODE_CHUNK // max(1, data[0].size)) if data.ndim == 3 and data.shape[0] else 1
        for band in range(0, data.shape[0], step):
            out[band:band + step] = self._encode_bands(data[band:band + step])
        return out

    def _encode_bands(self, data: np.ndarray) -> np.ndarray:
        missing = ~np.isfinite(data)
        if not self._is_int:
            if self.scale != 1.0:
                stored = (data.astype(np.float64) / self.scale).astype(self.dtype)
            else:
                stored = data.astype(self.dtype, copy=True)
            stored[missing] = self.nodata
            return stored
        info = np.iinfo(np.dtype(self.dtype))
        stored = data.astype(np.float64)
        stored[missing] = 0.0
        if self.scale != 1.0:
            stored /= self.scale
        np.rint(stored, out=stored)
        np.clip(stored, info.min, info.max, out=stored)
        stored[stored == self.nodata] = self.nodata + 1 if self.nodata < info.max else self.nodata - 1
        stored[missing] = self.nodata
        return stored.astype(self.dtype)

    def _check_window(self, shape: Tuple[int, ...], window: Window) -> None:
        if len(shape) != 3 or shape[0] != self.count:
            raise RasterWriteError(f"cannot write {self.path!r}: expected ({self.count}, h, w) data, got {shape}.")
        if (shape[1], shape[2]) != (int(window.height), int(window.width)):
            raise RasterWriteError(f"cannot write {self.path!r}: data {shape} does not fit window {window}.")
        inside = _intersect(window, self.width, self.height)
        if inside is None or (inside.width, inside.height) != (int(window.width), int(window.height)):
            raise RasterWriteError(
                f"cannot write {self.path!r}: window {window} leaves the {self.width} x {self.height} raster."
            )

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write ``data`` ``(C, h, w)`` in physical units (NaN = nodata) into ``window``."""
        data = np.asarray(data)
        self._check_window(data.shape, window)
        self.write_stored(self.encode(data), window)

    def write_stored(self, stored: np.ndarray, window: Window) -> None:
        """Write ``stored`` ``(C, h, w)``, already in the output dtype (:meth:`encode`), into ``window``."""
        stored = np.asarray(stored)
        self._check_window(stored.shape, window)
        if stored.dtype != np.dtype(self.dtype):
            raise RasterWriteError(f"cannot write {self.path!r}: stored values are {stored.dtype}, "
                                   f"the raster holds {self.dtype}; encode them first.")
        try:
            self._ds.write(stored, window=window)
        except (RasterioIOError, OSError, rasterio.errors.RasterioError) as exc:
            raise _write_failure(self.path, str(exc), exc) from exc

    def _discard(self) -> None:
        if not self._ds.closed:
            self._ds.close()
        for name in (self._temp, self._temp + ".cog.tif", self._temp + ".aux.xml"):
            if os.path.exists(name):
                os.remove(name)

    def _publish(self) -> None:
        self._ds.close()
        source = self._temp
        if self.cog:
            cog_temp = self._temp + ".cog.tif"
            with rasterio.open(self._temp) as src:
                options = {"compress": src.profile.get("compress", "zstd") or "zstd",
                           "blocksize": src.block_shapes[0][0] if src.is_tiled else 512,
                           "bigtiff": "IF_SAFER"}
            rasterio.shutil.copy(self._temp, cog_temp, driver="COG", **options)
            os.remove(self._temp)
            source = cog_temp
        missing, total = missing_blocks(source)
        if missing:
            raise _write_failure(self.path, f"{missing} of {total} blocks did not reach the disk")
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, self.path)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._publish()
        except RasterWriteError:
            self._discard()
            raise
        except Exception as error:
            failure = _write_failure(self.path, f"cannot finish the file: {error}", error)
            self._discard()
            raise failure from error


def write_raster(path: str, data: np.ndarray, *, crs, transform, nodata: Optional[float] = None,
                 bands: Sequence[BandInfo] = (), dtype: str = "float32", scale: float = 1.0,
                 overwrite: bool = False, **creation_options) -> None:
    """Write a whole ``(C, H, W)`` array (physical units, NaN = nodata) atomically.

    A convenience for small rasters (simulated pairs, tests); big outputs use
    :class:`RasterWriter` window by window.  Keyword arguments are those of
    :class:`RasterWriter` (``creation_options`` passes its GeoTIFF options).
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise RasterWriteError(f"cannot write {path!r}: expected (C, H, W) data, got shape {data.shape}.")
    count, height, width = data.shape
    with RasterWriter(path, width=width, height=height, count=count, crs=crs, transform=transform,
                      dtype=dtype, nodata=nodata, bands=bands, scale=scale, overwrite=overwrite,
                      **creation_options) as writer:
        writer.write(data, Window(0, 0, width, height))


#: Largest raster (as float32 bytes) that the whole-raster tools (training, simulation, evaluation) read.
MAX_WHOLE_BYTES = 4 * 1024**3


def read_whole(path: str, purpose: str) -> Tuple[RasterInfo, np.ndarray, np.ndarray]:
    """Read a whole raster for tools that need it in memory: ``(info, data (C, H, W), valid (H, W))``.

    ``purpose`` names the tool in the refusal (e.g. ``"training"``).  Rasters
    above :data:`MAX_WHOLE_BYTES` as float32 are refused with
    :class:`~csakd_qgis.errors.InputError` before anything is read.
    """
    info = read_info(path)
    size = 4 * info.count * info.width * info.height
    if size > MAX_WHOLE_BYTES:
        raise InputError(
            f"{path} is {size / 1024 ** 3:.1f} GB as float32; {purpose} reads rasters whole and accepts at most "
            f"{MAX_WHOLE_BYTES / 1024 ** 3:.0f} GB: crop a representative area first (gdal_translate -srcwin)"
        )
    data, valid = read_window(path)
    return info, data, valid

