"""Reading rasters: opening, band information, windowed reads in physical units, whole-raster reads.

Conventions
-----------
* Arrays are band-first: ``(C, H, W)``; a window is a
  :class:`rasterio.windows.Window` in pixels of the raster it is read from.
* Values returned by :func:`read_window` are ``float32`` in *physical units*:
  GDAL's per-band scale and offset are applied (``stored * scale + offset``).
  Windows are read in their stored type and converted in float32 (float64
  for float64 rasters): within a few float32 ulps of the float64 result,
  e.g. at most 2.0e-7 for int16 reflectance at a scale of ``1e-4`` (rounding
  the float64 result to float32 alone gives up to 1.2e-7).
* The nodata value is compared with the stored values, not the physical ones.
* A pixel is *invalid* when GDAL's mask says so (nodata value, alpha band,
  per-dataset mask) or when its value is NaN or infinite.  Where GDAL's mask
  is only the nodata comparison, it is done on the stored values instead of
  reading the mask (:func:`_nodata_is_the_mask`).  Invalid values are
  NaN.  The returned ``valid`` mask ``(H, W)`` is True where every *good* band
  is valid; bands flagged bad (ENVI ``bbl = 0``, e.g. water-vapour bands that
  EnMAP fills with nodata) do not decide validity but are NaN where they hold
  nothing.  When every selected band is bad, all of them decide.
* Band metadata (wavelengths, FWHM, bad bands) is described in
  :mod:`csakd_qgis.io.bands`.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Interleaving, MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReaderBase
from rasterio.windows import Window

from csakd_qgis.errors import InputError, RasterReadError
from csakd_qgis.io.bands import RasterInfo, band_metadata, data_band_indexes, info_from_dataset

#: GDAL block cache (MB) :func:`gdal_block_cache` gives a fusion run (its reads and its whole-block writes).
BLOCK_CACHE_MB = 64

#: Values (bands x pixels) :func:`read_band_window` reads per GDAL call from a band-interleaved raster: a
#: 224-band LR row strip (about 80 x 400 px) is read in groups of about 32 bands, so the stored values and
#: masks it holds besides the float32 result are a group's (2-3 MB), not the whole strip's.
READ_CHUNK = 2**20

#: Largest GDAL block cache (MB) a fusion asks for: the scene sample's reads and
#: :meth:`~csakd_qgis.fusion.plan.FusionPlan.block_cache_mb` / ``sample_cache_mb`` are capped at it.
MAX_BLOCK_CACHE_MB = 1024


def open_raster(path: str) -> rasterio.io.DatasetReader:
    """Open ``path`` read-only, turning GDAL failures into :class:`RasterReadError`."""
    try:
        return rasterio.open(path)
    except (RasterioIOError, OSError) as exc:
        raise RasterReadError(
            f"cannot open raster {path!r}: {exc}. Check the path and that GDAL can read the format "
            "(try 'gdalinfo' on it)."
        ) from exc


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
        return info_from_dataset(ds, str(path))


def intersect(window: Window, width: int, height: int) -> Optional[Window]:
    """Part of ``window`` inside a ``width`` x ``height`` raster, or None when empty."""
    col0, row0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
    col1 = min(int(window.col_off + window.width), width)
    row1 = min(int(window.row_off + window.height), height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _stored_nodata(nodata: Optional[float], dtype: np.dtype) -> Optional[np.generic]:
    """``nodata`` as a value of ``dtype``, or None when no value of ``dtype`` equals it (or it is NaN/None).

    Lets the nodata test run on the raw values in their stored type and still
    mean what a comparison in float64 means: a float32 value equals a
    double nodata only if the nodata is a float32 number, an integer only if
    the nodata is an integer in the type's range.
    """
    if nodata is None or math.isnan(nodata):
        return None
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        if not float(nodata).is_integer() or not limits.min <= nodata <= limits.max:
            return None
        return dtype.type(int(nodata))
    if np.issubdtype(dtype, np.floating):
        with np.errstate(over="ignore"):
            value = dtype.type(nodata)
        return value if float(value) == nodata else None
    return dtype.type(nodata)


def _physical(raw: np.ndarray, scales: Sequence[float], offsets: Sequence[float], out: np.ndarray) -> None:
    """``raw * scale + offset`` per band (``raw`` ``(C, h, w)``) into the float32 array ``out`` of the same shape.

    The arithmetic is float32 unless ``raw`` is float64 (then float64, cast
    once at the end): an integer or float32 value times a scale such as
    ``1e-4`` plus an offset is within a few float32 ulps (about ``3e-7``
    relative to ``|raw * scale| + |offset|``) of the float64 result, and
    reading in the stored type instead of float64 takes a quarter of the
    memory for int16 data.
    """
    scale = np.asarray(scales, dtype=np.float64)
    offset = np.asarray(offsets, dtype=np.float64)
    values = raw if raw.dtype == np.float64 else out  # what the arithmetic runs on, in its type
    if values is out:
        np.copyto(out, raw, casting="unsafe")
    work = values.dtype
    with np.errstate(over="ignore", invalid="ignore"):
        if (scale != 1.0).any():
            values *= scale.astype(work)[:, None, None]
        if (offset != 0.0).any():
            values += offset.astype(work)[:, None, None]
        if values is not out:
            np.copyto(out, values, casting="unsafe")


def _nodata_is_the_mask(ds: DatasetReaderBase, gdal_indexes: Sequence[int], stored: np.dtype) -> bool:
    """True when the stored values alone find exactly the invalid pixels GDAL's masks would.

    That holds when every band's mask is GDAL's nodata mask (or all-valid,
    with no nodata value anywhere), every band has the dataset's nodata
    value, and that value is exact in the ``stored`` type
    (:func:`_stored_nodata`) or is NaN in a float type (the finiteness test
    finds it).  Reading the masks then only repeats the comparison, and
    costs as much as reading the data (for int16 ZSTD tiles of 224 bands,
    1.45 s against 1.44 s).  Alpha bands and internal, external or
    per-dataset masks are read.
    """
    nodata = ds.nodata
    if nodata is None:
        wanted = {MaskFlags.all_valid}
    elif _stored_nodata(nodata, stored) is not None or (math.isnan(nodata) and np.issubdtype(stored, np.floating)):
        wanted = {MaskFlags.nodata}
    else:
        return False
    values, flags = ds.nodatavals, ds.mask_flag_enums
    for index in gdal_indexes:
        value = values[index - 1]
        same = value == nodata or (value is not None and nodata is not None
                                   and math.isnan(value) and math.isnan(nodata))
        if not same or set(flags[index - 1]) != wanted:
            return False
    return True


def checked_window(ds: DatasetReaderBase, window: Window,
                   boundless: bool) -> Tuple[Window, Optional[Window]]:
    """``(window, inner)``: ``window`` in whole pixels and its part inside ``ds`` (None when none is).

    Raises :class:`RasterReadError` for an empty window, or one that reaches
    outside the raster unless ``boundless``.
    """
    window = Window(int(round(window.col_off)), int(round(window.row_off)),
                    int(round(window.width)), int(round(window.height)))
    if window.width <= 0 or window.height <= 0:
        raise RasterReadError(f"empty window {window} requested from {ds.name!r}.")
    inner = intersect(window, ds.width, ds.height)
    if not boundless and (inner is None or inner.width != window.width or inner.height != window.height):
        raise RasterReadError(
            f"window {window} reaches outside raster {ds.name!r} ({ds.width} x {ds.height} pixels)."
        )
    return window, inner


def _band_groups(ds: DatasetReaderBase, count: int, pixels: int) -> Iterator[slice]:
    """Slices of ``count`` bands to read together from ``pixels`` pixels of ``ds``.

    At most :data:`READ_CHUNK` values each when ``ds`` is band-interleaved
    (a band's blocks hold that band alone); else all bands at once (each
    block holds every band, or is made from all of them, as a warped VRT's
    are, so it is decoded once).
    """
    step = max(1, READ_CHUNK // max(pixels, 1)) if ds.interleaving == Interleaving.band else count
    for first in range(0, count, step):
        yield slice(first, min(first + step, count))


def read_band_window(ds: DatasetReaderBase, window: Window, gdal_indexes: Sequence[int], *,
                     scales: Sequence[float], offsets: Sequence[float],
                     boundless: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(data float32 (C, h, w), band_valid bool (C, h, w))``: each band judged on its own, NaN where invalid.

    What :func:`read_dataset_window` reads before the good bands decide which
    pixels are valid (:func:`valid_pixels`), for callers that resample the
    bands first; arguments as there.  Reads the stored type (the bands'
    common type), compares it with the nodata value as stored, then
    converts to physical values (:func:`_physical`) straight into the
    returned array.  A band-interleaved raster is read in groups of bands
    (:func:`_band_groups`), so besides the two returned arrays a read holds
    only one group's stored values and masks.
    """
    window, inner = checked_window(ds, window, boundless)
    count = len(gdal_indexes)
    shape = (count, window.height, window.width)
    if inner is None:
        return np.full(shape, np.nan, dtype=np.float32), np.zeros(shape, dtype=bool)
    inside = inner.width == window.width and inner.height == window.height
    data = np.empty(shape, dtype=np.float32) if inside else np.full(shape, np.nan, dtype=np.float32)
    band_valid = np.empty(shape, dtype=bool) if inside else np.zeros(shape, dtype=bool)
    rows = slice(inner.row_off - window.row_off, inner.row_off - window.row_off + inner.height)
    cols = slice(inner.col_off - window.col_off, inner.col_off - window.col_off + inner.width)
    stored = np.dtype(np.result_type(*(ds.dtypes[i - 1] for i in gdal_indexes)))
    nodata = _stored_nodata(ds.nodata, stored)
    use_masks = not _nodata_is_the_mask(ds, gdal_indexes, stored)
    for group in _band_groups(ds, count, inner.width * inner.height):
        indexes = list(gdal_indexes[group])
        try:
            raw = ds.read(indexes, window=inner, out_dtype=stored)
            masks = ds.read_masks(indexes, window=inner) if use_masks else None
        except (RasterioIOError, OSError) as exc:
            raise RasterReadError(
                f"cannot read window {inner} of {ds.name!r}: {exc}. The file is probably truncated or damaged "
                "(an interrupted copy or download): create or download it again ('gdalinfo -checksum' on it "
                "shows whether every block can be read)."
            ) from exc
        physical, ok = data[group, rows, cols], band_valid[group, rows, cols]
        if masks is not None:
            np.not_equal(masks, 0, out=ok)
            if nodata is not None:
                ok &= raw != nodata
        elif nodata is not None:
            np.not_equal(raw, nodata, out=ok)
        else:
            ok[...] = True
        _physical(raw, scales[group], offsets[group], physical)
        ok &= np.isfinite(physical)
        np.copyto(physical, np.float32(np.nan), where=~ok)
    return data, band_valid


def valid_pixels(data: np.ndarray, band_valid: np.ndarray, good: Sequence[bool]) -> Tuple[np.ndarray, np.ndarray]:
    """``(data, valid (h, w))``: a pixel is valid where every good band is (every band when none is good).

    ``data`` is set to NaN in place where the pixel is invalid (see the
    module docstring).
    """
    deciding = np.asarray(good, dtype=bool)
    if not deciding.any():
        deciding = np.ones(len(deciding), dtype=bool)
    valid = band_valid[deciding].all(axis=0)
    data[:, ~valid] = np.nan
    return data, valid


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
    data, band_valid = read_band_window(ds, window, gdal_indexes, scales=scales, offsets=offsets,
                                        boundless=boundless)
    return valid_pixels(data, band_valid, good)


def read_exclusion(ds: DatasetReaderBase, window: Window) -> np.ndarray:
    """``bool (h, w)``: True where band 1 of the mask dataset ``ds`` is nonzero (exclude the pixel).

    The window may reach outside the raster; pixels there, and pixels at
    the mask's own nodata value, are not excluded.
    """
    window = Window(int(round(window.col_off)), int(round(window.row_off)),
                    int(round(window.width)), int(round(window.height)))
    excluded = np.zeros((int(window.height), int(window.width)), dtype=bool)
    inner = intersect(window, ds.width, ds.height)
    if inner is None:
        return excluded
    try:
        raw = ds.read(1, window=inner)
    except (RasterioIOError, OSError) as exc:
        raise RasterReadError(f"cannot read window {inner} of the mask {ds.name!r}: {exc}") from exc
    hit = raw != 0
    if ds.nodata is not None and not math.isnan(ds.nodata):
        hit &= raw != ds.nodata
    rows = slice(inner.row_off - window.row_off, inner.row_off - window.row_off + inner.height)
    cols = slice(inner.col_off - window.col_off, inner.col_off - window.col_off + inner.width)
    excluded[rows, cols] = hit
    return excluded


def count_valid(ds: DatasetReaderBase, window: Window, gdal_indexes: Sequence[int], *,
                scales: Sequence[float], offsets: Sequence[float]) -> np.ndarray:
    """``(C,)`` int64: the valid pixels of each band in ``window``, each band judged on its own.

    Finds bands that hold no value at all (e.g. water-vapour bands filled
    with nodata but not flagged bad), which :func:`read_dataset_window`
    would otherwise let invalidate every pixel.
    """
    _, band_valid = read_band_window(ds, window, gdal_indexes, scales=scales, offsets=offsets)
    return band_valid.sum(axis=(1, 2), dtype=np.int64)


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
    meta = band_metadata(ds, gdal_indexes)
    scales = [float(ds.scales[i - 1]) if ds.scales[i - 1] else 1.0 for i in gdal_indexes]
    offsets = [float(ds.offsets[i - 1] or 0.0) for i in gdal_indexes]
    return read_dataset_window(ds, window, gdal_indexes, scales=scales, offsets=offsets,
                               good=[m.good for m in meta], boundless=boundless)


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
