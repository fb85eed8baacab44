"""Input checks shared by the estimators: image shapes, good bands, valid pixels."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from csakd_qgis.errors import InputError

#: A band counts as good by default when at least this fraction of its pixels is finite.
MIN_FINITE_FRACTION = 0.5


def as_image(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a float64 ``(bands, rows, cols)`` array; :class:`InputError` naming ``name`` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise InputError(f"{name} must be a non-empty (bands, rows, cols) array, got shape {arr.shape}")
    return arr


def good_bands(x: np.ndarray, good: Optional[Sequence[bool]]) -> np.ndarray:
    """Boolean ``(C,)`` mask of the bands to use.

    ``good`` (``(C,)`` booleans, False = bad band) when given, else the bands
    finite on at least :data:`MIN_FINITE_FRACTION` of the pixels where any
    band is (NaN frames and gutters of a sample mosaic do not count).  Raises
    :class:`InputError` when the length is wrong or no band is left.
    """
    if good is None:
        finite = np.isfinite(x)
        somewhere = finite.any(axis=0)
        mask = finite[:, somewhere].mean(axis=1) >= MIN_FINITE_FRACTION if somewhere.any() else finite.any(axis=(1, 2))
    else:
        mask = np.asarray(good, dtype=bool).reshape(-1)
        if mask.size != x.shape[0]:
            raise InputError(f"the good-band mask has {mask.size} entries for {x.shape[0]} bands")
    if not mask.any():
        raise InputError("no good band is left: every band is flagged bad or mostly NaN")
    return mask


def pixel_matrix(x: np.ndarray, good: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels of the good bands as rows: ``(N, C_good)`` and the ``(rows, cols)`` mask of the pixels used.

    A pixel is used when all its good bands are finite.
    """
    sub = x[good]
    valid = np.isfinite(sub).all(axis=0)
    return sub[:, valid].T, valid
