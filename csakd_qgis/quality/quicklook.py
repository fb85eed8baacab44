"""True-colour quicklooks of hyperspectral rasters, read decimated (never the full raster).

The red, green and blue bands are the good bands nearest to 640, 550 and
470 nm when wavelengths are known, else bands 3, 2, 1 (or the first band as
grey).  Each channel is stretched linearly between its 2nd and 98th
percentile over the valid pixels; invalid pixels are transparent black.
"""

from __future__ import annotations

import io
import zlib
from typing import Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling

from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import read_info

#: Target centre wavelengths (nm) of the red, green and blue channels.
TRUE_COLOUR_NM = (640.0, 550.0, 470.0)


def rgb_band_indexes(bands: Sequence[BandInfo]) -> Tuple[int, int, int]:
    """1-based band indexes for red, green, blue (see the module docstring for the rule)."""
    known = [(i + 1, b.wavelength_nm) for i, b in enumerate(bands) if b.good and b.wavelength_nm is not None]
    if known:
        picks = [min(known, key=lambda item: abs(item[1] - target))[0] for target in TRUE_COLOUR_NM]
        return picks[0], picks[1], picks[2]
    count = len(bands)
    return (3, 2, 1) if count >= 3 else (1, 1, 1)


def stretch(channel: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(H, W)`` float → ``(H, W)`` uint8, 2–98 % linear stretch over the valid pixels."""
    values = channel[valid & np.isfinite(channel)]
    if values.size == 0:
        return np.zeros(channel.shape, np.uint8)
    low, high = np.percentile(values, [2.0, 98.0])
    scaled = (channel - low) / max(high - low, 1e-12)
    out = np.clip(np.nan_to_num(scaled, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def encode_png(rgba: np.ndarray) -> bytes:
    """Encode an ``(H, W, 4)`` uint8 RGBA array as PNG bytes (no imaging library needed)."""
    height, width, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])
    stream = io.BytesIO()
    stream.write(b"\x89PNG\r\n\x1a\n")
    stream.write(chunk(b"IHDR", header))
    stream.write(chunk(b"IDAT", zlib.compress(raw, 6)))
    stream.write(chunk(b"IEND", b""))
    return stream.getvalue()


def true_colour_png(path: str, png_path: Optional[str] = None, *, max_size: int = 1024) -> bytes:
    """Render a raster as a true-colour PNG at most ``max_size`` pixels on its long side.

    Parameters
    ----------
    path:
        Any GDAL raster with wavelength metadata (e.g. a fused output).
    png_path:
        Where to write the PNG; None only returns the bytes.
    max_size:
        Long side of the quicklook in pixels; the raster is read decimated
        (GDAL overviews when present, else nearest-neighbour decimation).

    Returns
    -------
    bytes
        The PNG file's content.
    """
    info = read_info(path)
    indexes = rgb_band_indexes(info.bands)
    factor = max(1.0, max(info.width, info.height) / float(max_size))
    shape = (max(1, round(info.height / factor)), max(1, round(info.width / factor)))
    with rasterio.open(path) as dataset:
        data = dataset.read(list(indexes), out_shape=(3,) + shape, resampling=Resampling.nearest,
                            masked=True)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    pixels = np.ma.filled(data.astype(np.float64), np.nan)
    rgba = np.zeros(shape + (4,), np.uint8)
    for channel in range(3):
        rgba[..., channel] = stretch(pixels[channel], valid)
    rgba[..., 3] = np.where(valid, 255, 0)
    png = encode_png(rgba)
    if png_path is not None:
        with open(png_path, "wb") as stream:
            stream.write(png)
    return png
