"""Sub-pixel translation of a raster window in memory (the LR-HSI's shift correction).

A raster whose pixels already are the target grid's, but moved by a
sub-pixel shift ``(dx, dy)`` (grid pixels; the sign of
:mod:`csakd_qgis.geo.shift`: grid pixel ``(col, row)`` takes the raster's
value at ``(col + dx, row + dy)``), needs no warper: each tile is read
unshifted with a margin of one pixel before and two after, and
interpolated separably with Keys' cubic kernel (``a = -0.5``, GDAL's
``cubic``; :data:`csakd_qgis.classical.filters.KERNELS` ``"keys"``).

Conventions:

* Arrays are ``(C, h, w)`` float32, NaN = invalid.  Taps on invalid
  pixels (NaN in a good band) are left out and the rest renormalised; a
  pixel whose valid taps weigh less than :data:`MIN_WEIGHT` is NaN (its
  nearest source pixels are invalid), so nodata grows by at most about one
  pixel, as with GDAL's warper.
* Outside the raster the edge pixels are repeated for the taps, and a
  grid pixel whose sample position lies outside the raster's footprint
  (``x < -0.5`` or ``x > width - 0.5`` in raster pixels, centre at the
  integer) is NaN.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from csakd_qgis.classical.filters import KERNELS

#: A resampled pixel whose valid taps weigh less than this (of 1) is invalid.
MIN_WEIGHT = 0.5
#: Source pixels a translated window needs before and after it, per axis (the cubic's support).
BEFORE, AFTER = 1, 2


def split_shift(shift: float) -> Tuple[int, float]:
    """``(whole, fraction)``: ``shift = whole + fraction`` with ``0 <= fraction < 1``."""
    whole = math.floor(shift)
    return int(whole), float(shift - whole)


def taps(fraction: float) -> np.ndarray:
    """``(4,)`` float32 Keys weights of source pixels ``-1, 0, 1, 2`` for a position ``fraction`` past pixel 0."""
    kernel = KERNELS["keys"][0]
    return kernel(fraction - np.arange(-BEFORE, AFTER + 1, dtype=np.float64)).astype(np.float32)


def _separable(x: np.ndarray, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    """``sum_j wy[j] sum_i wx[i] x[..., j + r, i + c]``: ``(..., h + 3, w + 3)`` float32 -> ``(..., h, w)``."""
    h, w = x.shape[-2] - BEFORE - AFTER, x.shape[-1] - BEFORE - AFTER
    across = x[..., :, 0:w] * wx[0]
    term = np.empty_like(across)
    for i in range(1, wx.size):
        across += np.multiply(x[..., :, i:i + w], wx[i], out=term)
    out = across[..., 0:h, :] * wy[0]
    term = term[..., 0:h, :]
    for j in range(1, wy.size):
        out += np.multiply(across[..., j:j + h, :], wy[j], out=term)
    return out


def translate(padded: np.ndarray, fx: float, fy: float, good: np.ndarray) -> np.ndarray:
    """Interpolate ``padded (C, h + 3, w + 3)`` float32 at ``fx, fy`` (in ``[0, 1)``) past each inner pixel.

    Output pixel ``(r, c)`` lies at ``padded[:, r + 1 + fy, c + 1 + fx]``.
    A pixel counts as invalid where any ``good`` band (``(C,)`` bool; every
    band when none is) is NaN; those taps are left out of every band and the
    rest renormalised (module notes).  NaN elsewhere in another band spreads
    to the output pixels whose taps reach it, in that band only.
    """
    wx, wy = taps(fx), taps(fy)
    deciding = good if good.any() else np.ones_like(good)
    usable = np.isfinite(padded[deciding]).all(axis=0)
    if usable.all():
        return _separable(padded, wx, wy)
    total = _separable(np.where(usable, padded, np.float32(0.0)), wx, wy)
    weight = _separable(usable.astype(np.float32), wx, wy)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight
    out[:, weight < MIN_WEIGHT] = np.nan
    return out


def edge_indexes(start: int, count: int, length: int) -> np.ndarray:
    """Indexes into a window of ``count`` pixels from ``start`` that repeat a ``length``-pixel raster's edges.

    Positions of the window outside ``[0, length)`` map to the nearest edge
    pixel inside the window; ``length`` must overlap the window.
    """
    positions = np.clip(np.arange(start, start + count), 0, length - 1)
    return positions - start


def outside_footprint(start: float, count: int, length: int) -> np.ndarray:
    """``(count,)`` True where sample positions ``start, start + 1, ...`` fall outside ``[-0.5, length - 0.5]``."""
    x = start + np.arange(count)
    return (x < -0.5) | (x > length - 0.5)
