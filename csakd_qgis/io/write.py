"""Writing GeoTIFFs atomically, with band metadata, nodata, scale and compression.

Outputs are written to a temporary file beside the destination
(``.NAME.csakd-partial-PID.tif``), checked block by block and renamed over it
only when complete, so an error, a cancelled run or a full disk leaves any
previous file untouched (``docs/reliability.md``).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from types import TracebackType
from typing import Any, Iterator, Optional, Sequence, Tuple, Type, Union

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Interleaving
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from csakd_qgis.errors import InputError, OutputExistsError, RasterWriteError
from csakd_qgis.io.bands import BandInfo, band_tags, envi_tags
from csakd_qgis.io.read import intersect

#: ZSTD level of written GeoTIFFs (GDAL's default, 9, compresses about 7x slower for about 10 % smaller files).
ZSTD_LEVEL = 1


#: Values encoded per step by :meth:`RasterWriter.encode`: its float64 scratch (2 MB) is allocated once per
#: writer, instead of float64 temporaries of up to 64 MB per call (before 0.12), with the same results.  In
#: whole runs the writer thread's CPU fell from 8.2-8.5 to 6.9-7.0 s (``bench/io_cpu.py``, 1500² x 224 output).
ENCODE_CHUNK = 2**18


#: Free bytes below which a failed write is reported as a full disk.
DISK_FULL_BYTES = 16 * 2**20


#: What every temporary file of an unfinished output has in its name.
PARTIAL_MARKER = "csakd-partial"


def partial_path(path: str, suffix: str = ".tif") -> str:
    """Return the temporary name (``.NAME.csakd-partial-PID`` + ``suffix``) a writer uses beside ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{PARTIAL_MARKER}-{os.getpid()}{suffix}")


def write_failure(path: str, detail: str, error: Optional[BaseException] = None) -> RasterWriteError:
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


def _pieces(shape: Tuple[int, ...], chunk: int) -> Iterator[Tuple[slice, slice]]:
    """``(bands, rows)`` slices that cover a ``(C, h, w)`` array in pieces of at most ``chunk`` values.

    Whole bands when one band fits (as many as fit), else rows of one band
    (at least one row, however wide).
    """
    count, height, width = shape
    plane = height * width
    if plane <= chunk:
        step = max(1, chunk // max(plane, 1))
        for band in range(0, count, step):
            yield slice(band, band + step), slice(None)
        return
    rows = max(1, chunk // width)
    for band in range(count):
        for row in range(0, height, rows):
            yield slice(band, band + 1), slice(row, row + rows)


def _default_nodata(dtype: str, nodata: Optional[float]) -> float:
    """Return the nodata to declare: the given one, else NaN (float) or an end of the integer range."""
    if nodata is not None:
        return float(nodata)
    if np.issubdtype(np.dtype(dtype), np.floating):
        return float("nan")
    info = np.iinfo(np.dtype(dtype))
    return float(info.min if info.min < 0 else info.max)


def check_destination(path: str, *, overwrite: bool, inputs: Sequence[str] = ()) -> None:
    """Refuse an output path that cannot be published, before anything is computed.

    Raises
    ------
    RasterWriteError
        ``path`` is a folder, or its folder does not exist or is not writable.
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    InputError
        ``path`` names one of ``inputs``.
    """
    if os.path.isdir(path):
        raise RasterWriteError(f"output {path!r} is a folder; give a file name, e.g. "
                               f"{os.path.join(path, 'fused.tif')!r}")
    target = os.path.realpath(path)
    for name in inputs:
        if os.path.exists(name) and os.path.realpath(name) == target:
            raise InputError(f"output {path!r} is also an input; choose another output name")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"output {path!r} exists; choose another name or allow overwriting (--overwrite)")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise RasterWriteError(f"cannot write {path!r}: folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RasterWriteError(f"cannot write {path!r}: folder {folder!r} is not writable; choose another")


class RasterWriter:
    """Context manager that writes a GeoTIFF window by window and publishes it atomically.

    Parameters
    ----------
    path:
        Destination file, checked by :func:`check_destination`.
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
    compress, blocksize:
        Compression (None: none) and the side of the square blocks.  A
        compressed output gets predictor 3 (floats) or 2 (integers); ZSTD is
        written at level :data:`ZSTD_LEVEL` unless ``zstd_level`` is passed.
        Other GeoTIFF creation options pass through ``creation_options``;
        BigTIFF is chosen when needed (``BIGTIFF=IF_SAFER``).
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

    def __init__(self, path: str, *, width: int, height: int, count: int,
                 crs: Union[CRS, str, None], transform: Affine,
                 dtype: str = "float32", nodata: Optional[float] = None, bands: Sequence[BandInfo] = (),
                 scale: float = 1.0, compress: Optional[str] = "zstd", blocksize: int = 256, cog: bool = False,
                 overwrite: bool = False, **creation_options: Any) -> None:
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
        check_destination(self.path, overwrite=overwrite)
        self.nodata = _default_nodata(self.dtype, nodata)
        self._is_int = np.issubdtype(np.dtype(self.dtype), np.integer)
        self._scratch: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None  # encode's, made on first use
        #: the range integer values are clipped to: the type's, less the nodata value at either end
        self._limits: Optional[Tuple[float, float]] = None
        if self._is_int:
            info = np.iinfo(np.dtype(self.dtype))
            if not info.min <= self.nodata <= info.max or self.nodata != int(self.nodata):
                raise RasterWriteError(f"nodata {nodata} cannot be stored as {self.dtype} in {self.path!r}.")
            self._limits = (float(info.min) + (self.nodata == info.min), float(info.max) - (self.nodata == info.max))
        self.blocksize = int(blocksize)
        self._temp = partial_path(self.path)
        profile = dict(driver="GTiff", width=self.width, height=self.height, count=self.count,
                       dtype=self.dtype, crs=crs, transform=transform, nodata=self.nodata,
                       bigtiff="IF_SAFER", interleave="pixel" if self.count <= 4 else "band",
                       tiled=True, blockxsize=self.blocksize, blockysize=self.blocksize)
        if compress:
            profile["compress"] = compress
            profile["predictor"] = 2 if self._is_int else 3
            if str(compress).lower() == "zstd":
                profile["zstd_level"] = ZSTD_LEVEL
        profile.update(creation_options)
        try:
            self._ds = rasterio.open(self._temp, "w", **profile)
        except (RasterioIOError, OSError, rasterio.errors.RasterioError) as exc:
            raise write_failure(self.path, f"cannot create it: {exc}", exc) from exc
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
            ds.update_tags(i, **band_tags(band))
            if band.description:
                ds.set_band_description(i, band.description)
            elif band.wavelength_nm is not None:
                ds.set_band_description(i, f"band {i} ({band.wavelength_nm:g} Nanometers)")
        if self.bands:
            ds.update_tags(ns="ENVI", **envi_tags(self.bands))
            if all(b.wavelength_nm is not None for b in self.bands):
                ds.update_tags(wavelength_units="Nanometers")

    def __enter__(self) -> RasterWriter:
        return self

    def encode(self, data: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Physical values to stored values.

        Parameters
        ----------
        data:
            ``(C, h, w)`` float physical values, NaN (or infinite) = nodata.
        out:
            ``(C, h, w)`` array of the output dtype to write them into (a
            view into a larger buffer is fine); None: a new array.

        Returns
        -------
        numpy.ndarray
            ``out``: float outputs ``data / scale`` (in float64, then cast)
            with nodata where invalid; integer outputs ``round(data / scale)``
            (in float64, then clipped to the type's range and moved off the
            nodata value) with nodata where invalid.  Worked out in pieces
            of at most :data:`ENCODE_CHUNK` values (:func:`_pieces`) in
            scratch buffers kept by the writer, so nothing of the size of
            ``data`` is allocated besides ``out``.
        """
        data = np.asarray(data)
        if data.ndim != 3:
            raise RasterWriteError(f"cannot encode for {self.path!r}: expected (C, h, w) data, got {data.shape}.")
        if out is None:
            out = np.empty(data.shape, dtype=self.dtype)
        elif out.shape != data.shape or out.dtype != np.dtype(self.dtype):
            raise RasterWriteError(f"cannot encode for {self.path!r}: {data.shape} values into a {out.shape} "
                                   f"{out.dtype} buffer (the raster holds {self.dtype}).")
        size = max(ENCODE_CHUNK, data.shape[2])  # a piece is at least one row
        if self._scratch is None or self._scratch[0].size < size:
            self._scratch = (np.empty(size, np.float64), np.empty(size, bool), np.empty(size, bool))
        for piece in _pieces(data.shape, ENCODE_CHUNK):
            self._encode_piece(data[piece], out[piece], self._scratch)
        return out

    def _encode_piece(self, data: np.ndarray, out: np.ndarray,
                      scratch: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """:meth:`encode` of one piece, every step in place in ``scratch`` (float64, bool, bool; large enough).

        Integer values are clipped to :attr:`_limits`, the type's range less
        the nodata value when that is one of its ends (the usual case), which
        moves them off it as the comparison with nodata would.  A piece whose
        values all lie within those limits (so none is NaN or infinite) skips
        the clip, numpy's slowest step here, and the nodata fill: its minimum
        and maximum cost a fraction of them.
        """
        if not data.size:
            return
        values, missing, hit = (buffer[:data.size].reshape(data.shape) for buffer in scratch)
        np.divide(data, self.scale, out=values, dtype=np.float64)
        if self._limits is None:
            np.isfinite(values, out=missing)
            complete = bool(missing.all())
        else:
            low, high = self._limits
            np.rint(values, out=values)
            complete = bool(low <= values.min() and values.max() <= high)  # False when any value is NaN
            if not complete:
                np.isfinite(values, out=missing)
                np.clip(values, low, high, out=values)
            if low <= self.nodata <= high:
                np.equal(values, self.nodata, out=hit)
                np.copyto(values, self.nodata + 1 if self.nodata < high else self.nodata - 1, where=hit)
        if not complete:
            np.logical_not(missing, out=missing)
            np.copyto(values, self.nodata, where=missing)
        np.copyto(out, values, casting="unsafe")

    def _check_window(self, shape: Tuple[int, ...], window: Window) -> None:
        if len(shape) != 3 or shape[0] != self.count:
            raise RasterWriteError(f"cannot write {self.path!r}: expected ({self.count}, h, w) data, got {shape}.")
        if (shape[1], shape[2]) != (int(window.height), int(window.width)):
            raise RasterWriteError(f"cannot write {self.path!r}: data {shape} does not fit window {window}.")
        inside = intersect(window, self.width, self.height)
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
            raise write_failure(self.path, str(exc), exc) from exc

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
            raise write_failure(self.path, f"{missing} of {total} blocks did not reach the disk")
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, self.path)

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._publish()
        except RasterWriteError:
            self._discard()
            raise
        except Exception as error:
            failure = write_failure(self.path, f"cannot finish the file: {error}", error)
            self._discard()
            raise failure from error


def write_raster(path: str, data: np.ndarray, *, crs: Union[CRS, str, None], transform: Affine,
                 nodata: Optional[float] = None, bands: Sequence[BandInfo] = (), dtype: str = "float32",
                 scale: float = 1.0, overwrite: bool = False, **creation_options: Any) -> None:
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
