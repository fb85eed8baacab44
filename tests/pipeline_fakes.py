"""Inputs for the engine tests: small GeoTIFFs on disk, and in-memory stand-ins for the pipeline's pair and sink."""

import numpy as np
import rasterio


def write_geotiff(path, data, transform, nodata=None, tags=()):
    """Write ``data`` ``(C, H, W)`` as a GeoTIFF in EPSG:32633 with per-band ``tags``; returns the path as str."""
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32633", transform=transform, nodata=nodata) as ds:
        ds.write(data)
        for i, t in enumerate(tags, start=1):
            ds.update_tags(i, **t)
    return str(path)


class ArraySource:
    """A ``PairSource`` over in-memory ``(C, H, W)`` arrays; every pixel valid; each read a copy of its own."""

    def __init__(self, lr, msi):
        self.lr, self.msi = lr, msi

    def _cut(self, array, w):
        part = array[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width].copy()
        return part, np.ones(part.shape[1:], bool)

    def read_lr(self, window):
        return self._cut(self.lr, window)

    def read_msi(self, window):
        return self._cut(self.msi, window)


class RecordingSink:
    """A ``Sink`` that stores float32 values into ``out`` ``(C, H, W)`` and records each window as
    ``(col_off, row_off, width, height)``."""

    def __init__(self, shape):
        self.out = np.full(shape, np.nan, np.float32)
        self.windows = []

    dtype = "float32"

    def encode(self, data, out):
        out[...] = data
        return out

    def write_stored(self, stored, window):
        self.windows.append((int(window.col_off), int(window.row_off), int(window.width), int(window.height)))
        self.out[:, window.row_off:window.row_off + window.height,
                 window.col_off:window.col_off + window.width] = stored
