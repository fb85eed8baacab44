"""Radiometric normalisation shared by training and inference.

Networks see each input divided by its own *robust level*: the 99th
percentile of its valid, finite values over all bands.  The LR-HSI output is
multiplied back by the LR-HSI's level.  Because the level is measured on the
image itself, a model trained on reflectance x 10000 also serves reflectance
in [0, 1], digital numbers or radiance, as long as the two inputs keep the
spectral shapes the model was trained on.  Training (the simulator pairs,
the scene-adaptive pairs) and inference (the tiled engine, on a decimated
sample of the whole raster so every tile uses the same level) call the same
function, so the convention cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from csakd_qgis.errors import InputError

#: Percentile (0..100) of the valid values that maps to 1.0.
LEVEL_PERCENTILE = 99.0


def robust_level(values: np.ndarray, valid: Optional[np.ndarray] = None, *, name: str = "input") -> float:
    """Return the level that maps ``values`` to roughly ``[0, 1]``.

    Parameters
    ----------
    values:
        Array of any shape, e.g. ``(C, H, W)``; NaN and infinities are ignored.
    valid:
        Optional boolean mask broadcastable to ``values`` (True = valid pixel),
        e.g. ``(H, W)`` for a ``(C, H, W)`` array.
    name:
        Used in the error message (``"LR-HSI"``, ``"HR-MSI"``).

    Returns
    -------
    float
        The :data:`LEVEL_PERCENTILE`-th percentile of the valid finite values,
        or their largest absolute value when that percentile is not positive.

    Raises
    ------
    InputError
        When no valid finite value is positive (all nodata, all zero).
    """
    data = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(data)
    if valid is not None:
        keep &= np.broadcast_to(np.asarray(valid, dtype=bool), data.shape)
    sample = data[keep]
    if sample.size:
        level = float(np.percentile(sample, LEVEL_PERCENTILE))
        if level <= 0.0:
            level = float(np.max(np.abs(sample)))
        if level > 0.0:
            return level
    raise InputError(
        f"the {name} has no valid positive values (all nodata, zero or NaN); "
        "check its nodata value and that it covers the area"
    )


@dataclass(frozen=True)
class Radiometry:
    """Scene-wide normalisation: robust levels and per-band fill values in physical units."""

    lr_level: float
    msi_level: float
    lr_fill: np.ndarray  # (C,) float32
    msi_fill: np.ndarray  # (m,) float32
    empty_bands: Tuple[int, ...] = ()  # LR-HSI bands (0-based) without any value: written as nodata


def fill_with_band_medians(x: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` as float32 with each band's NaN replaced by the band's median (0 for an all-NaN band).

    For whole-image tools that need NaN-free inputs, as the engine's methods
    do (the engine itself fills with the scene's per-band means, :class:`Radiometry`).
    """
    out = np.array(x, dtype=np.float32)
    for band in out:
        bad = ~np.isfinite(band)
        if bad.any():
            band[bad] = np.nanmedian(band) if (~bad).any() else 0.0
    return out
